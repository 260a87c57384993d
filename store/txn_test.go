package store

import (
	"errors"
	"testing"
)

func TestTxnReadsItsOwnWritesAndCommitsAllOrNothing(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if err := s.Update(func(w Writer) error { return w.Set([]byte("c/a"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	tx := s.Begin()
	if err := tx.Set([]byte("c/b"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete([]byte("c/a")); err != nil {
		t.Fatal(err)
	}
	if v, err := tx.Get([]byte("c/b")); err != nil || string(v) != "2" {
		t.Fatalf("Get of an own write = %q, %v", v, err)
	}
	if has, err := tx.Has([]byte("c/a")); err != nil || has {
		t.Fatalf("Has of an own deletion = %v, %v", has, err)
	}
	var keys []string
	if err := tx.Scan([]byte("c/"), nil, true, func(k, v []byte) error {
		if v != nil {
			t.Errorf("keysOnly scan gave a value for %q", k)
		}
		keys = append(keys, string(k))
		return nil
	}); err != nil || len(keys) != 1 || keys[0] != "c/b" {
		t.Fatalf("scan inside the transaction = %v, %v", keys, err)
	}
	tx.Discard()
	if _, err := s.Get([]byte("c/b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a discarded write is stored: %v", err)
	}

	tx = s.Begin()
	_ = tx.Set([]byte("c/b"), []byte("2"))
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	err := s.View(func(r Reader) error {
		v, err := r.Get([]byte("c/b"))
		if err != nil || string(v) != "2" {
			t.Errorf("View after Commit: %q, %v", v, err)
		}
		has, err := r.Has([]byte("c/a"))
		if err != nil || !has {
			t.Errorf("View: Has(c/a) = %v, %v", has, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
