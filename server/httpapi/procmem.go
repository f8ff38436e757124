package httpapi

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// procMem is a collector of the process's resident memory by kind, read
// from /proc/self/status (Linux): herald_process_resident_memory_bytes
// {kind="anon"|"file"|"shmem"}. process_resident_memory_bytes is their
// sum, and with the Badger store most of it can be the store's
// memory-mapped files: pages of the data directory the kernel keeps
// mapped in and may drop under memory pressure, which grow and shrink
// with the data directory rather than with what the process holds. The
// anonymous part is the heap, stacks and buffers: where a leak shows.
type procMem struct {
	path string
	desc *prometheus.Desc
}

// procMemKinds are the /proc/PID/status fields read, and their kind label.
var procMemKinds = [...]struct{ field, kind string }{
	{"RssAnon:", "anon"}, {"RssFile:", "file"}, {"RssShmem:", "shmem"},
}

// newProcMem returns the collector, or nil where path cannot be read as
// a process status (not Linux).
func newProcMem(path string) *procMem {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	if _, err := parseProcMem(b); err != nil {
		return nil
	}
	return &procMem{path: path, desc: prometheus.NewDesc("herald_process_resident_memory_bytes",
		"Resident memory by kind: anon (heap, stacks, buffers), file (memory-mapped files: the store's), shmem; process_resident_memory_bytes is their sum.",
		[]string{"kind"}, nil)}
}

// Describe implements prometheus.Collector.
func (p *procMem) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

// Collect implements prometheus.Collector: one read of the status file.
func (p *procMem) Collect(ch chan<- prometheus.Metric) {
	b, err := os.ReadFile(p.path)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(p.desc, fmt.Errorf("read %s: %w", p.path, err))
		return
	}
	v, err := parseProcMem(b)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(p.desc, err)
		return
	}
	for i, k := range procMemKinds {
		ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, v[i], k.kind)
	}
}

// parseProcMem returns the bytes of each of procMemKinds's fields from a
// /proc/PID/status text ("RssAnon:	   38412 kB").
func parseProcMem(status []byte) ([len(procMemKinds)]float64, error) {
	var v [len(procMemKinds)]float64
	var seen [len(procMemKinds)]bool
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		for i, k := range procMemKinds {
			if string(f[0]) != k.field {
				continue
			}
			if len(f) != 3 || string(f[2]) != "kB" {
				return v, fmt.Errorf("process status: %q: want a number of kB", sc.Text())
			}
			n, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				return v, fmt.Errorf("process status: %q: %w", sc.Text(), err)
			}
			v[i], seen[i] = float64(n)*1024, true
		}
	}
	for i, k := range procMemKinds {
		if !seen[i] {
			return v, fmt.Errorf("process status: no %s line", k.field)
		}
	}
	return v, nil
}
