package restproxy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestBodiesPastTheMemoryLimitAreSpooledNotHeld(t *testing.T) {
	dir := t.TempDir()
	small, err := readBody(strings.NewReader("hello"), 5, 16, 64, dir)
	if err != nil || small.file != nil || string(small.mem) != "hello" {
		t.Fatalf("small body: %v %+v", err, small)
	}
	data := bytes.Repeat([]byte("0123456789"), 5) // 50 bytes: over 16 in memory, under 64
	for _, cl := range []int64{50, -1} {          // announced, and chunked
		b, err := readBody(bytes.NewReader(data), cl, 16, 64, dir)
		if err != nil || b.file == nil || b.mem != nil || b.size != 50 {
			t.Fatalf("content length %d: want a 50-byte spooled body, got %v %+v", cl, err, b)
		}
		for range 2 { // every attempt reads the same bytes
			got, _ := io.ReadAll(b.reader())
			if !bytes.Equal(got, data) {
				t.Fatalf("spooled body reads back %q", got)
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("the spool file must be unlinked while in use, found %v", ents)
		}
		b.Close()
	}
	for _, cl := range []int64{65, -1} {
		if _, err := readBody(bytes.NewReader(bytes.Repeat([]byte("x"), 65)), cl, 16, 64, dir); !errors.Is(err, errTooLarge) {
			t.Fatalf("65 bytes with a limit of 64 (content length %d): %v", cl, err)
		}
	}
}

func TestSplitVersion(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v10/users/@me": "10 /users/@me",
		"/v9/users/@me":      "9 /users/@me",
		"/api/users/@me":     "10 /users/@me",
		"/api/v10":           "bad",
		"/api":               "bad",
		"/apix/users":        "bad",
		"/users/@me":         "bad",
		"/v/users":           "bad",
		"/api/v0/users":      "bad",
	} {
		v, rest, ok := splitVersion(path, 10)
		got := "bad"
		if ok {
			got = strconv.Itoa(v) + " " + rest
		}
		if got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}
