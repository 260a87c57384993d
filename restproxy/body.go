package restproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// errTooLarge: the body is over rest.max_body.
var errTooLarge = errors.New("request body too large")

// errSpool marks a failure to write the body to rest.spool_dir (disk full, directory gone): dd's
// trouble, not the caller's.
var errSpool = errors.New("spooling the request body")

// spoolWriter tags its write errors with errSpool, so that a failed copy says which side failed.
type spoolWriter struct{ f *os.File }

func (w spoolWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = fmt.Errorf("%w to %s: %w", errSpool, w.f.Name(), err)
	}
	return n, err
}

// body is a request body fully received from the caller: in memory when small, otherwise in an
// unlinked temp file, so that every attempt (and every retry) sends the same bytes without holding a
// large upload in memory.
type body struct {
	mem  []byte
	file *os.File
	size int64
}

// readBody receives the caller's body. Bodies up to memLimit stay in memory; larger ones are spooled to
// dir as they arrive. Over maxBody it stops with errTooLarge.
func readBody(r io.Reader, contentLength, memLimit, maxBody int64, dir string) (*body, error) {
	if contentLength > maxBody {
		return nil, errTooLarge
	}
	lr := &io.LimitedReader{R: r, N: maxBody + 1}
	var buf bytes.Buffer
	if contentLength >= 0 && contentLength <= memLimit {
		buf.Grow(int(contentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(lr, memLimit+1)); err != nil {
		return nil, err
	}
	if lr.N <= 0 {
		return nil, errTooLarge
	}
	if int64(buf.Len()) <= memLimit {
		return &body{mem: buf.Bytes(), size: int64(buf.Len())}, nil
	}
	f, err := os.CreateTemp(dir, "dd-rest-body-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSpool, err)
	}
	// Unlinked at once: the open file lives until Close, and nothing is left behind after a crash.
	_ = os.Remove(f.Name())
	b := &body{file: f}
	if _, err := (spoolWriter{f}).Write(buf.Bytes()); err != nil {
		b.Close()
		return nil, err
	}
	n, err := io.Copy(spoolWriter{f}, lr)
	b.size = int64(buf.Len()) + n
	if err != nil {
		b.Close()
		return nil, err
	}
	if lr.N <= 0 {
		b.Close()
		return nil, errTooLarge
	}
	return b, nil
}

// reader returns a fresh reader over the whole body.
func (b *body) reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem)
}

// Close releases the spool file.
func (b *body) Close() {
	if b != nil && b.file != nil {
		_ = b.file.Close()
	}
}
