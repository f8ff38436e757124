package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The write-ahead log. With SyncEachBatch on disk, every group-commit batch
// is first written as one frame to the log and made durable with one
// fdatasync; Badger is written without syncing. Badger's own write path
// with SyncWrites msyncs its memtable's log and its value log on every
// transaction; on a file it grew sparse, each msync also allocates blocks
// and commits the file system's journal. The frame instead goes into a
// segment file whose blocks were written (with zeros) before use, so its
// fdatasync writes data only. Measured on the development machine: 53 µs
// of CPU and 0.15 ms per write+fdatasync of 4 KiB into such a file, against
// 70–80 µs and 0.16–0.25 ms for an msync of a sparse mapping or an append
// with fsync (each batch paid two msyncs before).
//
// Why Badger may skip its syncs: what Badger holds but has not synced is
// either in the operating system's page cache (it survives a process kill)
// or, after a power loss, found again in the log. A segment is reused only
// after a checkpoint: every batch it holds was committed to Badger, then
// every Badger file that can hold unsynced data (the memtables' logs,
// *.mem, and the value logs, *.vlog) and Badger's directory were fsynced.
// Badger syncs its tables and manifest itself. Opening replays whatever
// the segments still hold onto Badger, in order, so a batch found in the
// log is in Badger after Open, whatever Badger kept of it.
//
// Segments are files of a fixed size (Options.WALSegmentBytes), written
// with zeros when created and then reused, so no write changes a file's
// size. A segment starts with a header naming its number (its place in
// the log) and a random salt; each frame is
//
//	length (4 bytes) | CRC-32C of salt and body (4) | body
//	body: sequence (8) | operation count (4) | operations
//	operation: flags (1) | expires at (8) | key length (2) | key | value length (4) | value
//
// all big-endian. The salt makes frames left from a segment's earlier use
// fail their checksum, and sequences run on by one from frame to frame, so
// replay stops exactly where the last written frame ends. A segment is
// retired by zeroing its header (and syncing that) before it is reused.

const (
	walDirName = "wal"
	walExt     = ".wal"

	// defaultWALSegmentBytes is the default size of a segment file.
	defaultWALSegmentBytes = 16 << 20
	// minWALSegmentBytes is the smallest segment allowed (tests use it).
	minWALSegmentBytes = 64 << 10

	// walSpares is how many retired segments are kept for reuse; more are
	// removed.
	walSpares = 2

	walMagic       = "HRLDWAL1"
	walHeaderLen   = 32 // magic (8) | number (8) | salt (8) | CRC-32C of those (4) | zero (4)
	walFrameHeader = 8  // length (4) | CRC-32C (4)
	walBodyHeader  = 12 // sequence (8) | operation count (4)
	walOpHeader    = 1 + 8 + 2 + 4

	walOpDelete byte = 1 // the operation deletes its key
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// kvOp is one Badger write of a batch, as the log keeps it.
type kvOp struct {
	key, value []byte
	expiresAt  uint64 // Badger's ExpiresAt (Unix seconds); 0 for none
	del        bool
}

// walSegment is one segment file.
type walSegment struct {
	f      *os.File
	number uint64 // place in the log; 0 while free
	salt   uint64
	size   int64 // the file's size, fixed at creation
	end    int64 // where the next frame goes
}

// wal is the write-ahead log of one store. The committer goroutine writes
// and syncs frames; the checkpointer (Store.checkpointLoop) retires full
// segments and prepares free ones.
type wal struct {
	dir      string
	segBytes int64
	logger   *slog.Logger

	// Committer state.
	active *walSegment
	seq    uint64 // sequence of the last frame written
	buf    []byte // the frame being encoded

	mu         sync.Mutex // guards following
	full       []*walSegment
	free       []*walSegment
	nextNumber uint64 // number of the next segment to start
	files      int    // segment files created or found, to name new ones
	// kick wakes the checkpointer: a segment is full, or the free list
	// ran dry. 1-buffered.
	kick chan struct{}
}

// walDir returns the log's directory inside a store's directory.
func walDir(storeDir string) string { return filepath.Join(storeDir, walDirName) }

// replayed is what openWAL found: the operations of every frame, in order.
type replayed struct {
	ops    []kvOp
	frames int
}

// openWAL opens (creating if needed) the log in dir and reads back every
// frame it holds. The segments read are not retired here: the caller
// applies the operations to Badger, checkpoints, then calls retireAll.
func openWAL(dir string, segBytes int64, logger *slog.Logger) (*wal, replayed, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, replayed{}, fmt.Errorf("store: create write-ahead log directory: %w", err)
	}
	w := &wal{
		dir:        dir,
		segBytes:   segBytes,
		logger:     logger,
		kick:       make(chan struct{}, 1),
		nextNumber: 1,
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, replayed{}, fmt.Errorf("store: read write-ahead log directory: %w", err)
	}
	var used []*walSegment
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, walExt) || !e.Type().IsRegular() {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(name, walExt)); err == nil && n >= w.files {
			w.files = n + 1
		}
		seg, err := openSegment(filepath.Join(dir, name))
		if err != nil {
			w.closeAll(used)
			return nil, replayed{}, err
		}
		if seg.number == 0 {
			w.free = append(w.free, seg)
			continue
		}
		used = append(used, seg)
	}
	slices.SortFunc(used, func(a, b *walSegment) int { return cmpUint64(a.number, b.number) })
	var rep replayed
	for i, seg := range used {
		if i > 0 && seg.number != used[i-1].number+1 {
			w.closeAll(used)
			return nil, replayed{}, fmt.Errorf("store: write-ahead log: segment %d follows segment %d: a segment is missing", seg.number, used[i-1].number)
		}
		if err := w.readSegment(seg, &rep, i == len(used)-1); err != nil {
			w.closeAll(used)
			return nil, replayed{}, err
		}
		w.nextNumber = seg.number + 1
	}
	w.full = used
	return w, rep, nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (w *wal) closeAll(segs []*walSegment) {
	for _, s := range segs {
		_ = s.f.Close()
	}
	for _, s := range w.free {
		_ = s.f.Close()
	}
	w.free = nil
}

// openSegment opens a segment file and reads its header; a file with no
// valid header is a free segment (number 0).
func openSegment(path string) (*walSegment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("store: open write-ahead log segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("store: write-ahead log segment %s: %w", path, err)
	}
	seg := &walSegment{f: f, size: st.Size()}
	var h [walHeaderLen]byte
	if _, err := f.ReadAt(h[:], 0); err != nil && !errors.Is(err, io.EOF) {
		_ = f.Close()
		return nil, fmt.Errorf("store: read write-ahead log segment %s: %w", path, err)
	}
	if string(h[:8]) == walMagic && binary.BigEndian.Uint32(h[24:]) == crc32.Checksum(h[:24], crc32c) {
		seg.number = binary.BigEndian.Uint64(h[8:])
		seg.salt = binary.BigEndian.Uint64(h[16:])
	}
	return seg, nil
}

// readSegment appends the operations of seg's frames to rep, stopping at
// the first frame that is not whole or fails its checksum: the end of
// what was written (a frame cut short by a crash was never acknowledged).
// A whole frame out of sequence, or a segment without a frame followed
// by another segment, cannot come from a crash: the log is corrupt and
// replaying past the damage could lose acknowledged batches, so that is
// an error. It leaves seg.end after the last good frame.
func (w *wal) readSegment(seg *walSegment, rep *replayed, last bool) error {
	data := make([]byte, seg.size)
	n, err := seg.f.ReadAt(data, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("store: read write-ahead log segment %d: %w", seg.number, err)
	}
	data = data[:n]
	var saltBytes [8]byte
	binary.BigEndian.PutUint64(saltBytes[:], seg.salt)
	pos := int64(walHeaderLen)
	for pos+walFrameHeader+walBodyHeader <= int64(len(data)) {
		length := int64(binary.BigEndian.Uint32(data[pos:]))
		sum := binary.BigEndian.Uint32(data[pos+4:])
		if length < walBodyHeader || pos+walFrameHeader+length > int64(len(data)) {
			break
		}
		body := data[pos+walFrameHeader : pos+walFrameHeader+length]
		if crc32.Update(crc32.Checksum(saltBytes[:], crc32c), crc32c, body) != sum {
			break
		}
		seq := binary.BigEndian.Uint64(body)
		if w.seq != 0 && seq != w.seq+1 {
			return fmt.Errorf("store: write-ahead log segment %d: frame %d follows frame %d: the log is corrupt", seg.number, seq, w.seq)
		}
		ops, err := decodeOps(body[walBodyHeader:], int(binary.BigEndian.Uint32(body[8:])))
		if err != nil {
			return fmt.Errorf("store: write-ahead log segment %d, frame %d: %w", seg.number, seq, err)
		}
		rep.ops = append(rep.ops, ops...)
		rep.frames++
		w.seq = seq
		pos += walFrameHeader + length
	}
	seg.end = pos
	if pos == walHeaderLen && !last {
		return fmt.Errorf("store: write-ahead log segment %d holds no frame, yet segment %d follows it: the log is corrupt", seg.number, seg.number+1)
	}
	return nil
}

// decodeOps decodes count operations; the keys and values alias b.
func decodeOps(b []byte, count int) ([]kvOp, error) {
	ops := make([]kvOp, 0, count)
	for range count {
		if len(b) < walOpHeader {
			return nil, errors.New("operation cut short")
		}
		op := kvOp{del: b[0]&walOpDelete != 0, expiresAt: binary.BigEndian.Uint64(b[1:])}
		kl := int(binary.BigEndian.Uint16(b[9:]))
		b = b[11:]
		if len(b) < kl+4 {
			return nil, errors.New("operation key cut short")
		}
		op.key, b = b[:kl], b[kl:]
		vl := int(binary.BigEndian.Uint32(b))
		b = b[4:]
		if len(b) < vl {
			return nil, errors.New("operation value cut short")
		}
		op.value, b = b[:vl], b[vl:]
		ops = append(ops, op)
	}
	if len(b) != 0 {
		return nil, errors.New("data after the operations")
	}
	return ops, nil
}

// opsBytes is the size of ops encoded in a frame.
func opsBytes(ops []kvOp) int {
	n := 0
	for i := range ops {
		n += walOpHeader + len(ops[i].key) + len(ops[i].value)
	}
	return n
}

// write encodes ops as the next frame and writes it to the active
// segment, starting a segment when the frame does not fit. It returns
// the file to sync. Only the committer calls it.
func (w *wal) write(ops []kvOp) (*os.File, error) {
	size := walFrameHeader + walBodyHeader + opsBytes(ops)
	if w.active == nil || w.active.end+int64(size) > w.active.size {
		if err := w.rotate(int64(size)); err != nil {
			return nil, err
		}
	}
	seg := w.active
	b := slices.Grow(w.buf[:0], size)[:walFrameHeader]
	b = binary.BigEndian.AppendUint64(b, w.seq+1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ops)))
	for i := range ops {
		op := &ops[i]
		var flags byte
		if op.del {
			flags |= walOpDelete
		}
		b = append(b, flags)
		b = binary.BigEndian.AppendUint64(b, op.expiresAt)
		b = binary.BigEndian.AppendUint16(b, uint16(len(op.key)))
		b = append(b, op.key...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(op.value)))
		b = append(b, op.value...)
	}
	var saltBytes [8]byte
	binary.BigEndian.PutUint64(saltBytes[:], seg.salt)
	binary.BigEndian.PutUint32(b, uint32(len(b)-walFrameHeader))
	binary.BigEndian.PutUint32(b[4:], crc32.Update(crc32.Checksum(saltBytes[:], crc32c), crc32c, b[walFrameHeader:]))
	w.buf = b
	if _, err := seg.f.WriteAt(b, seg.end); err != nil {
		// seg.end stays: the next frame overwrites what was written.
		return nil, fmt.Errorf("store: write-ahead log: %w", err)
	}
	w.seq++
	seg.end += int64(len(b))
	return seg.f, nil
}

// rotate retires the active segment to the full list (every frame in it
// was synced before this one was written) and starts the next one: a free segment,
// or a new file when none is free. A frame larger than a segment gets a
// file of its own size.
func (w *wal) rotate(frame int64) error {
	w.mu.Lock()
	if w.active != nil {
		w.full = append(w.full, w.active)
		w.active = nil
	}
	var seg *walSegment
	for i, s := range w.free {
		if s.size >= walHeaderLen+frame {
			seg = s
			w.free = slices.Delete(w.free, i, i+1)
			break
		}
	}
	number := w.nextNumber
	w.nextNumber++
	name := w.files
	if seg == nil {
		w.files++
	}
	w.mu.Unlock()
	w.signal() // a full segment to retire, or the free list to refill

	if seg == nil {
		var err error
		seg, err = createSegment(w.dir, name, max(w.segBytes, walHeaderLen+frame))
		if err != nil {
			return err
		}
		w.logger.Debug("store: write-ahead log segment created on the commit path", "segment", number)
	}
	seg.number = number
	seg.salt = rand.Uint64()
	var h [walHeaderLen]byte
	copy(h[:], walMagic)
	binary.BigEndian.PutUint64(h[8:], seg.number)
	binary.BigEndian.PutUint64(h[16:], seg.salt)
	binary.BigEndian.PutUint32(h[24:], crc32.Checksum(h[:24], crc32c))
	// The header becomes durable with the segment's first frame: both are
	// synced by that frame's fdatasync.
	if _, err := seg.f.WriteAt(h[:], 0); err != nil {
		return fmt.Errorf("store: write-ahead log: start segment %d: %w", number, err)
	}
	seg.end = walHeaderLen
	w.active = seg
	return nil
}

func (w *wal) signal() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// createSegment creates segment file number name of size bytes, writes it
// with zeros, and syncs it and the directory, so that later writes into
// it change no file metadata.
func createSegment(dir string, name int, size int64) (*walSegment, error) {
	path := filepath.Join(dir, fmt.Sprintf("%06d%s", name, walExt))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: create write-ahead log segment: %w", err)
	}
	fail := func(err error) (*walSegment, error) {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("store: create write-ahead log segment %s: %w", path, err)
	}
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			return fail(err)
		}
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	return &walSegment{f: f, size: size}, nil
}

// syncDir makes dir's entries durable. Windows has no such call (and
// opens no directory for writing): there it does nothing.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// takeFull returns the full segments, oldest first, and forgets them.
func (w *wal) takeFull() []*walSegment {
	w.mu.Lock()
	defer w.mu.Unlock()
	full := w.full
	w.full = nil
	return full
}

// retire zeroes the headers of segs, whose frames are all checkpointed,
// syncs them, and keeps up to walSpares of them for reuse; the others are
// removed.
func (w *wal) retire(segs []*walSegment) error {
	var zero [walHeaderLen]byte
	for _, seg := range segs {
		if _, err := seg.f.WriteAt(zero[:], 0); err != nil {
			return fmt.Errorf("store: write-ahead log: retire segment %d: %w", seg.number, err)
		}
		if err := datasync(seg.f); err != nil {
			return fmt.Errorf("store: write-ahead log: retire segment %d: %w", seg.number, err)
		}
		seg.number, seg.salt, seg.end = 0, 0, 0
	}
	w.mu.Lock()
	var drop []*walSegment
	for _, seg := range segs {
		if len(w.free) < walSpares && seg.size == w.segBytes {
			w.free = append(w.free, seg)
		} else {
			drop = append(drop, seg)
		}
	}
	w.mu.Unlock()
	for _, seg := range drop {
		name := seg.f.Name()
		_ = seg.f.Close()
		if err := os.Remove(name); err != nil {
			w.logger.Warn("store: write-ahead log: remove a retired segment", "file", name, "err", err)
		}
	}
	return nil
}

// ensureSpare creates a free segment when there is none, off the commit
// path (the checkpointer calls it).
func (w *wal) ensureSpare() error {
	w.mu.Lock()
	if len(w.free) > 0 {
		w.mu.Unlock()
		return nil
	}
	name := w.files
	w.files++
	w.mu.Unlock()
	seg, err := createSegment(w.dir, name, w.segBytes)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.free = append(w.free, seg)
	w.mu.Unlock()
	return nil
}

// close closes every segment file. The caller has stopped the committer
// and the checkpointer.
func (w *wal) close() error {
	var errs []error
	segs := append(append([]*walSegment(nil), w.full...), w.free...)
	if w.active != nil {
		segs = append(segs, w.active)
	}
	for _, s := range segs {
		if err := s.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	w.full, w.free, w.active = nil, nil, nil
	return errors.Join(errs...)
}
