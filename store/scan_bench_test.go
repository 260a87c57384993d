package store

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// benchScanStore holds 4,096 keys of 640-byte values under one prefix, flushed out of the memtable
// into tables as a queue's backlog is.
func benchScanStore(b *testing.B) *Store {
	s, err := Open(Options{Path: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	v := bytes.Repeat([]byte("x"), 640)
	for i := 0; i < 4096; i += 512 {
		err := s.Update(func(w Writer) error {
			for j := i; j < i+512; j++ {
				if err := w.Set(binary.BigEndian.AppendUint64([]byte("q/e/"), uint64(j)), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := s.db.Flatten(1); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkScan reads n values from a position (a queue's read of its backlog, a check for one event);
// ns/op is per scan.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{1, 356} {
		b.Run(map[int]string{1: "first", 356: "read-ahead"}[n], func(b *testing.B) {
			s := benchScanStore(b)
			from := binary.BigEndian.AppendUint64([]byte("q/e/"), 1000)
			b.ReportAllocs()
			for b.Loop() {
				got, sum := 0, 0
				err := s.Scan([]byte("q/e/"), from, func(_, v []byte) error {
					got++
					sum += len(v)
					if got == n {
						return ErrStopScan
					}
					return nil
				})
				if err != nil || got != n || sum != n*640 {
					b.Fatalf("scan: %v, %d values of %d bytes, want %d of 640", err, got, sum, n)
				}
			}
		})
	}
}

// BenchmarkScanKeys counts 1,024 keys, values unread (what the queue does to find what to delete).
func BenchmarkScanKeys(b *testing.B) {
	s := benchScanStore(b)
	b.ReportAllocs()
	for b.Loop() {
		got := 0
		err := s.ScanKeys([]byte("q/e/"), nil, func(k []byte) error {
			if got++; got == 1024 {
				return ErrStopScan
			}
			return nil
		})
		if err != nil || got != 1024 {
			b.Fatalf("scan: %v, %d keys, want 1024", err, got)
		}
	}
}
