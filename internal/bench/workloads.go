package bench

// The workloads: fan-out and channels (streams), idle, resume.

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// streams is a stream workload under way: channels prepared, subscribers
// connected, publishers running, the warm-up over.
type streams struct {
	r                      *benchRun
	cancelSubs, cancelPubs context.CancelFunc
	subWG, pubWG           sync.WaitGroup
	stopProgress           func()
}

// startStreams connects the subscribers, starts the publishers and the
// progress line, and waits out the warm-up.
func (r *benchRun) startStreams(ctx context.Context) (*streams, error) {
	if err := r.prepareChannels(ctx); err != nil {
		return nil, err
	}
	st := &streams{r: r}
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	st.cancelSubs = cancelSubs
	if err := r.connectAll(ctx, subCtx, &st.subWG); err != nil {
		r.stopSubscribers(cancelSubs, &st.subWG)
		return nil, err
	}
	pubCtx, cancelPubs := context.WithCancel(ctx)
	st.cancelPubs = cancelPubs
	if err := r.startPublishers(pubCtx, &st.pubWG); err != nil {
		cancelPubs()
		r.stopSubscribers(cancelSubs, &st.subWG)
		return nil, err
	}
	st.stopProgress = r.startProgress()
	r.phase.Store(benchPhaseWarmup)
	benchWait(ctx, r.opts.warmup)
	return st, nil
}

// stop stops the publishers, lets settle (when not nil) adjust the heads
// the drain waits for, waits (bounded) for what is in flight, and stops
// the subscribers.
func (st *streams) stop(ctx context.Context, res *benchResult, settle func()) {
	r := st.r
	r.pubStop.Store(true)
	st.pubWG.Wait()
	st.cancelPubs()
	r.settleHeads()
	if settle != nil {
		settle()
	}
	r.phase.Store(benchPhaseDrain)
	drainStart := time.Now()
	arrived := r.drain(ctx, r.opts.drain)
	res.DrainSeconds = round3(time.Since(drainStart).Seconds())
	res.DrainComplete = arrived
	r.stopSubscribers(st.cancelSubs, &st.subWG)
	r.phase.Store(benchPhaseDone)
	st.stopProgress()
}

// runStream runs fanout and channels.
func (r *benchRun) runStream(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	st, err := r.startStreams(ctx)
	if err != nil {
		return nil, err
	}
	s0 := r.snapshot()
	r.latFrom.Store(s0.at.UnixNano())
	r.phase.Store(benchPhaseMeasure)
	benchWait(ctx, r.opts.duration)
	s1 := r.snapshot()
	r.latTo.Store(s1.at.UnixNano())
	st.stop(ctx, res, nil)
	r.fill(res, s0, s1)
	return res, nil
}

// runIdle opens N connections, holds them and reads the server's memory.
func (r *benchRun) runIdle(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	before, err := benchReadProc(r.opts.serverPID)
	if err != nil {
		return nil, fmt.Errorf("--server-pid %d: %w", r.opts.serverPID, err)
	}
	selfBefore, _ := benchReadProc(0)
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	var subWG sync.WaitGroup
	connectStart := time.Now()
	steps := r.opts.steps
	if len(steps) == 0 {
		steps = []int{len(r.subs)}
	}
	var stepResults []benchIdleStep
	var connectSecs float64
	var after benchProcStat
	stopProgress := func() {}
	for i, n := range steps {
		prev := 0
		if i > 0 {
			prev = steps[i-1]
		}
		if err := r.connectSubs(ctx, subCtx, &subWG, r.subs[prev:n]); err != nil {
			stopProgress()
			r.stopSubscribers(cancelSubs, &subWG)
			return nil, err
		}
		if i == 0 {
			r.phase.Store(benchPhaseHold)
			stopProgress = r.startProgress()
		}
		connectSecs = time.Since(connectStart).Seconds()
		r.phase.Store(benchPhaseHold)
		held, _ := benchReadProc(r.opts.serverPID)
		benchWait(ctx, r.opts.hold)
		if after, err = benchReadProc(r.opts.serverPID); err != nil {
			break
		}
		st := benchIdleStep{Connections: n, RSSKiB: after.RSSKiB,
			PerConnKiB: math.Round(float64(after.RSSKiB-before.RSSKiB)/float64(n)*100) / 100}
		if r.opts.hold > 0 {
			st.IdleCPUPercent = math.Round((after.CPU-held.CPU).Seconds()/r.opts.hold.Seconds()*10000) / 100
		}
		stepResults = append(stepResults, st)
	}
	selfAfter, _ := benchReadProc(0)
	var reconnects int64
	for _, s := range r.subs {
		reconnects += s.reconnects.Load()
	}
	r.stopSubscribers(cancelSubs, &subWG)
	r.phase.Store(benchPhaseDone)
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("--server-pid %d: %w", r.opts.serverPID, err)
	}
	n := float64(len(r.subs))
	res.Idle = &benchIdleResult{
		Connections:      len(r.subs),
		Channels:         len(r.chans),
		ConnectSeconds:   connectSecs,
		HoldSeconds:      r.opts.hold.Seconds(),
		RSSBeforeKiB:     before.RSSKiB,
		RSSAfterKiB:      after.RSSKiB,
		PerConnKiB:       math.Round(float64(after.RSSKiB-before.RSSKiB)/n*100) / 100,
		ToolPerConnKiB:   math.Round(float64(selfAfter.RSSKiB-selfBefore.RSSKiB)/n*100) / 100,
		ServerCPUSeconds: (after.CPU - before.CPU).Seconds(),
	}
	if len(r.opts.steps) > 0 {
		res.Idle.Steps = stepResults
	}
	res.Server = &benchServerResult{PID: r.opts.serverPID, RSSKiB: after.RSSKiB, PeakRSSKiB: after.HWMKiB, CPUs: after.CPUs}
	res.Tool.RSSKiB = selfAfter.RSSKiB
	res.Reconnects = reconnects
	r.fillErrors(res)
	return res, nil
}

// runResume: subscribe, note the position, leave; publish K; come back
// from the position and time the catch-up.
func (r *benchRun) runResume(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	if err := r.prepareChannels(ctx); err != nil {
		return nil, err
	}
	sub := r.subs[0]
	ch := r.chans[0]

	// 1. Subscribe and leave at once, keeping the position.
	r.phase.Store(benchPhaseConnect)
	sub.once = true
	if err := sub.session(ctx, func() {}); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	sub.once = false
	sub.pollSess = "" // come back by cursor alone, as after losing the session

	// 2. Publish K, as fast as the publishers are acknowledged.
	r.phase.Store(benchPhasePublish)
	stopProgress := r.startProgress()
	r.pubBounded = true
	r.pubTickets.Store(int64(r.opts.messages))
	pubCtx, cancelPubs := context.WithCancel(ctx)
	defer cancelPubs()
	var pubWG sync.WaitGroup
	r.latFrom.Store(0) // every message counts
	p0 := time.Now()
	if err := r.startPublishers(pubCtx, &pubWG); err != nil {
		stopProgress()
		return nil, err
	}
	pubWG.Wait()
	pubSecs := time.Since(p0).Seconds()
	r.settleHeads()
	if ctx.Err() != nil {
		stopProgress()
		return nil, fmt.Errorf("interrupted while publishing: %w", ctx.Err())
	}
	want := int64(ch.head - sub.track.base)
	if h, err := r.history(ctx, ch, sub.track.base); err != nil {
		stopProgress()
		return nil, fmt.Errorf("check the history: %w", err)
	} else if !h.covers(sub.track.base) {
		stopProgress()
		return nil, fmt.Errorf("the server no longer keeps channel %s from offset %d (head %d): its history holds fewer than the %d messages published; raise history.size in the server's configuration to at least %d", ch.name, sub.track.base+1, h.Head, want, want)
	}

	// 3. Come back from the position and time the catch-up.
	r.phase.Store(benchPhaseCatchUp)
	s0 := r.snapshot()
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	var subWG sync.WaitGroup
	ready := make(chan error, 1)
	subWG.Add(1)
	go func() {
		defer subWG.Done()
		sub.run(subCtx, ready)
	}()
	arrived := r.drain(ctx, r.opts.timeout)
	s1 := r.snapshot()
	end := time.Unix(0, sub.lastAt.Load())
	if !arrived || end.Before(s0.at) {
		end = s1.at
	}
	s1.at = end
	r.latTo.Store(math.MaxInt64)
	r.stopSubscribers(cancelSubs, &subWG)
	r.phase.Store(benchPhaseDone)
	stopProgress()
	select {
	case err := <-ready:
		if err != nil {
			r.errs.add("resume: reconnect: %v", err)
		}
	default:
	}
	res.DrainComplete = arrived
	r.fill(res, s0, s1)
	catch := end.Sub(s0.at).Seconds()
	res.Resume = &benchResumeResult{
		Messages:       want,
		PublishSeconds: round3(pubSecs),
		PublishPerSec:  math.Round(float64(r.acks()) / pubSecs),
		CatchUpSeconds: round3(catch),
		CatchUpPerSec:  math.Round(float64(sub.track.distinct) / catch),
		CaughtUp:       arrived,
		ReceivedOfWant: sub.track.distinct,
		StartOffset:    sub.track.base,
		EndOffset:      ch.head,
	}
	res.AcksPerSec = res.Resume.PublishPerSec
	res.Acks = r.acks()
	return res, nil
}
