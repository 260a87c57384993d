// Package tmpfstest mounts small tmpfs filesystems for tests that must fill a disk for real (a full
// disk is a failure no fake reproduces: Badger's memory-mapped writes fault, they do not return an
// error). Mounting needs root; tests skip elsewhere, and CI runs them as root.
package tmpfstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new directory, unmounted when the test ends. It skips the test
// when the process is not root or mounting is not permitted.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs and fill it (CI runs as root)")
	}
	dir, err := os.MkdirTemp("", "dd-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount a tmpfs here (%v: %s): this test needs a real small filesystem", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}

// Fill writes a file at path until the filesystem is full or max bytes were written, and returns how
// many bytes it wrote.
func Fill(t testing.TB, path string, max int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i) // not zeros: nothing may keep them sparse
	}
	var n int64
	for n < max {
		w, err := f.Write(buf[:min(int64(len(buf)), max-n)])
		n += int64(w)
		if err != nil {
			break // ENOSPC: full
		}
	}
	return n
}
