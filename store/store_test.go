package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWritesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	err := s.Update(func(w Writer) error {
		for i := 0; i < 100; i++ {
			if err := w.Set([]byte(fmt.Sprintf("q/%03d", i)), []byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return w.Set([]byte("session/0"), []byte("abc"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	v, err := s.Get([]byte("session/0"))
	if err != nil || string(v) != "abc" {
		t.Fatalf("after reopen Get = %q, %v", v, err)
	}
	var keys []string
	err = s.Scan([]byte("q/"), []byte("q/050"), func(k, v []byte) error {
		keys = append(keys, string(k))
		if len(keys) == 10 {
			return ErrStopScan
		}
		return nil
	})
	if err != nil || len(keys) != 10 || keys[0] != "q/050" || keys[9] != "q/059" {
		t.Fatalf("scan from q/050 = %v, %v", keys, err)
	}
}

func TestUpdateIsAllOrNothing(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	boom := errors.New("boom")
	err := s.Update(func(w Writer) error {
		_ = w.Set([]byte("a"), []byte("1"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update error = %v", err)
	}
	if _, err := s.Get([]byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed Update left its write behind: %v", err)
	}
}

func TestSecondOpenOfSameDirectoryIsRefusedClearly(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	_, err := Open(Options{Path: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another dd") {
		t.Fatalf("second open: want ErrLocked saying another dd holds it, got %v (lock file %s)", err, lockFile(dir))
	}
}

func TestUnwritableDirectoryIsReportedAsSuch(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores permission bits; a path under a regular file is unwritable for everyone.
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Options{Path: filepath.Join(f, "data")})
		if err == nil || !strings.Contains(err.Error(), "store.path") {
			t.Fatalf("want an error naming store.path, got %v", err)
		}
		return
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Path: dir})
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("want 'not writable', got %v", err)
	}
}
