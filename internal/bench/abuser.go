package bench

// The abusive user of the flood workload (flood.go): connections that
// pipeline publishes as fast as the server answers, and the tally of what
// it answered.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// benchAbuser is the abusive user: conns connections, each with up to
// window publishes in flight, as fast as the server answers.
type benchAbuser struct {
	r      *benchRun
	conns  int
	window int
	req    []byte // one POST /api/publish

	// Live, for the progress line.
	attempts, refused atomic.Int64

	mu    sync.Mutex // guards the fields below, filled as connections end
	count benchAbuseCount
	start time.Time
	end   time.Time
}

// benchAbuseCount is one connection's tally, merged into the abuser's.
type benchAbuseCount struct {
	attempts, accepted, byRule, inFlight, noRetryAfter int64
	other                                              map[int]int64
	maxOffset                                          uint64
	ruleMessage                                        string // a refusal by the rule: it states the limit
	sample                                             string
	errs                                               []string
}

func (c *benchAbuseCount) add(o *benchAbuseCount) {
	c.attempts += o.attempts
	c.accepted += o.accepted
	c.byRule += o.byRule
	c.inFlight += o.inFlight
	c.noRetryAfter += o.noRetryAfter
	for k, v := range o.other {
		if c.other == nil {
			c.other = map[int]int64{}
		}
		c.other[k] += v
	}
	c.maxOffset = max(c.maxOffset, o.maxOffset)
	if c.ruleMessage == "" {
		c.ruleMessage = o.ruleMessage
	}
	if c.sample == "" {
		c.sample = o.sample
	}
	c.errs = append(c.errs, o.errs...)
}

// benchFloodData is the abuser's message data. Its "t" — a send time long
// before any measured window — keeps its messages in the delivery
// accounting (lost, duplicated, out of order) and out of the latencies.
const benchFloodData = `{"t":1,"flood":true}`

func newBenchAbuser(r *benchRun, token string) *benchAbuser {
	body := `{"channel":"` + r.chans[0].name + `","event":"` + benchEvent + `","data":` + benchFloodData + `}`
	req := "POST " + r.urls.publishPath + " HTTP/1.1\r\nHost: " + r.urls.hostPort +
		"\r\nUser-Agent: herald-bench\r\nContent-Type: application/json\r\nAuthorization: Bearer " + token +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	return &benchAbuser{r: r, conns: r.opts.floodConns, window: r.opts.floodWindow, req: []byte(req)}
}

// run floods until ctx ends, then reads every answer still due.
func (a *benchAbuser) run(ctx context.Context) {
	a.mu.Lock()
	a.start = time.Now()
	a.mu.Unlock()
	var wg sync.WaitGroup
	for range a.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a.flood(ctx)
			a.mu.Lock()
			a.count.add(&c)
			a.mu.Unlock()
		}()
	}
	wg.Wait()
	a.mu.Lock()
	a.end = time.Now()
	a.mu.Unlock()
}

// benchAbuseBatch is how many requests the abuser writes at once, at most.
const benchAbuseBatch = 32

// flood runs one connection: a writer keeps window requests in flight,
// this goroutine reads the answers.
func (a *benchAbuser) flood(ctx context.Context) (c benchAbuseCount) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", a.r.urls.hostPort)
	if err != nil {
		if ctx.Err() == nil {
			c.errs = append(c.errs, err.Error())
		}
		return c
	}
	defer conn.Close()
	reqs := bytes.Repeat(a.req, benchAbuseBatch)
	slots := make(chan struct{}, a.window)
	wrote := make(chan struct{}, 1)
	writerDone := make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(writerDone)
		for {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			n := 1
		more:
			for n < benchAbuseBatch {
				select {
				case slots <- struct{}{}:
					n++
				default:
					break more
				}
			}
			_ = conn.SetWriteDeadline(time.Now().Add(publishTimeout))
			if _, err := conn.Write(reqs[:n*len(a.req)]); err != nil {
				return // the reader sees the connection fail
			}
			sent.Add(int64(n))
			select {
			case wrote <- struct{}{}:
			default:
			}
		}
	}()
	br := bufio.NewReaderSize(conn, 64<<10)
	var body []byte
	var received int64
	for {
		if received == sent.Load() {
			select {
			case <-writerDone:
				if received == sent.Load() {
					return c
				}
			case <-wrote:
			}
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(publishTimeout))
		code, retryHdr, b, err := ReadHTTPAnswer(br, &body)
		if err != nil {
			c.errs = append(c.errs, fmt.Sprintf("answer %d: %v", received+1, err))
			conn.Close()
			<-writerDone
			return c
		}
		received++
		<-slots
		c.tally(code, retryHdr, b)
		a.attempts.Add(1)
		if code == http.StatusTooManyRequests {
			a.refused.Add(1)
		}
	}
}

var (
	benchKeyRetryAfter = []byte(`"retry_after":`)
	benchRuleRefusal   = []byte(` is limited to `)
)

// tally counts one answer.
func (c *benchAbuseCount) tally(code int, retryHdr bool, b []byte) {
	c.attempts++
	switch code {
	case http.StatusOK:
		off, ok := benchUintField(b, benchKeyOffsetQ)
		if !ok {
			c.otherStatus(code)
			c.note("200 without an offset: %.300s", b)
			return
		}
		c.accepted++
		c.maxOffset = max(c.maxOffset, off)
	case http.StatusTooManyRequests:
		if bytes.Contains(b, benchRuleRefusal) {
			c.byRule++
			if c.ruleMessage == "" {
				c.ruleMessage = string(b)
			}
		} else {
			c.inFlight++
		}
		if secs, ok := benchUintField(b, benchKeyRetryAfter); !ok || secs < 1 || !retryHdr {
			c.noRetryAfter++
			c.note("429 %.300s (Retry-After header: %v)", b, retryHdr)
		}
	default:
		c.otherStatus(code)
		c.note("%d %.300s", code, b)
	}
}

func (c *benchAbuseCount) otherStatus(code int) {
	if c.other == nil {
		c.other = map[int]int64{}
	}
	c.other[code]++
}

func (c *benchAbuseCount) note(format string, args ...any) {
	if c.sample == "" {
		c.sample = fmt.Sprintf(format, args...)
	}
}

// ReadHTTPAnswer reads one HTTP/1.1 answer with a Content-Length body
// into *buf (valid until the next call), noting a Retry-After header. A
// hand-made reader, as the publishers' ones: the abuser must stay cheap
// next to the server it floods.
func ReadHTTPAnswer(br *bufio.Reader, buf *[]byte) (code int, retryAfter bool, body []byte, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, false, nil, fmt.Errorf("status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, nil, fmt.Errorf("status line %q", line)
	}
	length := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, nil, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("Retry-After")):
			retryAfter = len(value) > 0
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			return 0, false, nil, fmt.Errorf("the server closes the connection (status %d)", code)
		}
	}
	if length < 0 || length > 1<<20 {
		return 0, false, nil, fmt.Errorf("a %d answer without a usable Content-Length", code)
	}
	if cap(*buf) < length {
		*buf = make([]byte, length)
	}
	body = (*buf)[:length]
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, false, nil, err
	}
	return code, retryAfter, body, nil
}

// benchLimitRE finds the rule's limit in a refusal:
// `publishing to channel \"c\" is limited to 100 per 1s`.
var benchLimitRE = regexp.MustCompile(` is limited to (\d+) per ([0-9a-zµ.]+)`)

// benchParseLimit reads the limit and window a rule refusal states.
func benchParseLimit(msg string) (limit int, window time.Duration, ok bool) {
	m := benchLimitRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, 0, false
	}
	limit, err1 := strconv.Atoi(m[1])
	window, err2 := time.ParseDuration(m[2])
	if err1 != nil || err2 != nil || limit < 1 || window <= 0 {
		return 0, 0, false
	}
	return limit, window, true
}

// benchMaxAccepted is what a token bucket of limit, refilled at limit per
// window, can grant over d.
func benchMaxAccepted(limit int, window, d time.Duration) int64 {
	return int64(limit) + int64(math.Ceil(float64(limit)*d.Seconds()/window.Seconds()))
}
