package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"

	"github.com/dgraph-io/badger/v4"
)

// Backups. A backup is a consistent copy of the whole store — every
// channel's log with its epoch and offsets, idempotency keys, grants,
// bans, webhook outboxes, data sync positions — taken while the store
// serves. It is Badger's backup stream of one snapshot, read at a moment
// between two group commits (so that every append acknowledged before the
// backup began is in it, and no commit is in it in part), framed by a
// header line and a trailer holding its length and SHA-256, so that a
// truncated or altered file is refused instead of restored in part:
//
//	HERALD BACKUP 1\n
//	<Badger's backup stream>
//	HERALD-END <sha256 of the stream, hex> <its length, 20 digits>\n

const (
	backupHeader = "HERALD BACKUP 1\n"
	trailerLen   = len("HERALD-END ") + 64 + 1 + 20 + 1
)

// ErrBadBackup is a backup file Restore or VerifyBackup refuses.
var ErrBadBackup = errors.New("store: not a complete Herald backup")

// BackupInfo describes a backup written.
type BackupInfo struct {
	Bytes  int64  // the whole file
	SHA256 string // of Badger's stream, hex
}

// Backup writes a backup of the store to w while it serves. A failed
// write or ctx ending stops it with an error; what was written is then
// not a complete backup (its trailer is missing).
func (s *Store) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	if s.opts.InMemory {
		return BackupInfo{}, errors.New("store: an in-memory store has no backup")
	}
	if !s.enter() {
		return BackupInfo{}, ErrClosed
	}
	defer s.exit()
	// The snapshot is taken between two commits: a commit's writes, which
	// may take several Badger transactions, are all in it or none.
	s.applyMu.Lock()
	stream := s.db.NewStream()
	s.applyMu.Unlock()
	stream.LogPrefix = "herald backup"
	if _, err := io.WriteString(w, backupHeader); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	body := &hashingWriter{ctx: ctx, w: w, h: sha256.New()}
	if _, err := stream.Backup(body, 0); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	sum := hex.EncodeToString(body.h.Sum(nil))
	trailer := fmt.Sprintf("HERALD-END %s %020d\n", sum, body.n)
	if _, err := io.WriteString(w, trailer); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	return BackupInfo{Bytes: int64(len(backupHeader)) + body.n + int64(len(trailer)), SHA256: sum}, nil
}

// hashingWriter writes through to w, hashing and counting, and fails once
// ctx has ended.
type hashingWriter struct {
	ctx context.Context
	w   io.Writer
	h   hash.Hash
	n   int64
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	if err := hw.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// VerifyBackup checks a backup file of size bytes read through r: its
// header, its trailer, and its stream's length and SHA-256. It returns
// the stream.
func VerifyBackup(r io.ReaderAt, size int64) (*io.SectionReader, BackupInfo, error) {
	minSize := int64(len(backupHeader) + trailerLen)
	if size < minSize {
		return nil, BackupInfo{}, fmt.Errorf("%w: %d bytes, shorter than an empty backup", ErrBadBackup, size)
	}
	head := make([]byte, len(backupHeader))
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, BackupInfo{}, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if string(head) != backupHeader {
		return nil, BackupInfo{}, fmt.Errorf("%w: it does not start with %q", ErrBadBackup, backupHeader[:len(backupHeader)-1])
	}
	tail := make([]byte, trailerLen)
	if _, err := r.ReadAt(tail, size-int64(trailerLen)); err != nil {
		return nil, BackupInfo{}, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	var sum string
	var n int64
	if t := string(tail); len(t) == trailerLen && t[:11] == "HERALD-END " && t[75] == ' ' && t[trailerLen-1] == '\n' {
		sum = t[11:75]
		n, _ = strconv.ParseInt(t[76:96], 10, 64)
	}
	body := size - minSize
	if sum == "" || n != body {
		return nil, BackupInfo{}, fmt.Errorf("%w: its end is missing or damaged (the file was cut short, or is not a backup)", ErrBadBackup)
	}
	section := io.NewSectionReader(r, int64(len(backupHeader)), body)
	h := sha256.New()
	if _, err := io.Copy(h, section); err != nil {
		return nil, BackupInfo{}, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return nil, BackupInfo{}, fmt.Errorf("%w: its content does not match its checksum (the file was altered or damaged)", ErrBadBackup)
	}
	return io.NewSectionReader(r, int64(len(backupHeader)), body), BackupInfo{Bytes: size, SHA256: sum}, nil
}

// Restore writes the backup in file into opts.Dir, which must be empty or
// missing, as a store Open then serves with every channel's epoch and
// offsets as they were when the backup was taken.
func Restore(file string, opts Options) (BackupInfo, error) {
	opts = opts.withDefaults()
	if opts.InMemory || opts.Dir == "" {
		return BackupInfo{}, errors.New("store: restore needs a data directory")
	}
	f, err := os.Open(file)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	stream, info, err := VerifyBackup(f, st.Size())
	if err != nil {
		return BackupInfo{}, err
	}
	if entries, err := os.ReadDir(opts.Dir); err == nil && len(entries) > 0 {
		return BackupInfo{}, refuse("restore into %q: the folder is not empty; restore into an empty or new folder, then point data_dir at it", opts.Dir)
	}
	if err := checkDataDir(opts.Dir, opts.Companions); err != nil {
		return BackupInfo{}, err
	}
	db, err := badger.Open(opts.badgerOptions())
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: open %q: %w", opts.Dir, err)
	}
	if err := db.Load(stream, 256); err != nil {
		_ = db.Close()
		return BackupInfo{}, fmt.Errorf("store: restore: load: %w", err)
	}
	if err := db.Sync(); err != nil {
		_ = db.Close()
		return BackupInfo{}, fmt.Errorf("store: restore: sync: %w", err)
	}
	if err := db.Close(); err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: close: %w", err)
	}
	// Opened once as the server will: the layout is checked, the outbox
	// and the channels' heads are read back.
	s, err := Open(opts)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: the restored store does not open: %w", err)
	}
	return info, s.Close()
}
