// Package rawjson finds things in JSON without decoding it: the end of each object in a stream, and the
// raw value of a top-level field. dd routes gateway payloads on a few top-level fields (op, s, t, an id)
// and passes the rest on byte for byte, so a full decode (or even encoding/json's validating scan) of the
// often large "d" would be wasted work on the event hot path. It trusts its input to be JSON (Discord's);
// it is not a validator.
package rawjson

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
)

// ErrSyntax reports input that is not the JSON this package expects.
var ErrSyntax = errors.New("rawjson: malformed JSON")

// ObjectReader reads consecutive top-level JSON objects from a stream.
type ObjectReader struct {
	r    io.Reader
	buf  []byte
	head int // start of unread data in buf
	tail int // end of data in buf
	// maxKeep bounds the buffer kept between objects: a larger one (after a big payload) is dropped.
	maxKeep int
}

// NewObjectReader reads from r. A buffer grown past 4 KiB by a large object is dropped once it is read
// out: a gateway connection spends most of its life idle, blocked in a read into this buffer, and a
// thousand of them keeping their largest GUILD_CREATE's buffer would cost megabytes.
func NewObjectReader(r io.Reader) *ObjectReader {
	return &ObjectReader{r: r, maxKeep: 4 << 10}
}

// Next returns the next object, as a new slice the caller owns. It reads from the stream only as far as
// the object's closing brace, so on a stream of messages it never waits for the following message.
func (o *ObjectReader) Next() ([]byte, error) {
	// Skip white space before the object.
	for {
		for o.head < o.tail && isSpace(o.buf[o.head]) {
			o.head++
		}
		if o.head < o.tail {
			break
		}
		if w, ok := o.r.(messageWaiter); ok {
			// Between objects, where a gateway connection idles: wait without the buffer.
			o.putBuffer()
			if err := w.WaitMessage(); err != nil {
				return nil, err
			}
		}
		if err := o.fill(); err != nil {
			return nil, err
		}
	}
	if o.buf[o.head] != '{' {
		return nil, ErrSyntax
	}
	depth, inString := 0, false
	i := o.head
	for {
		for i < o.tail {
			if inString {
				// To the string's end: its next quote not escaped by an odd run of backslashes. The run
				// is in buf (it stops at the string's opening quote, and buf keeps the object from its
				// start), so nothing needs carrying across reads.
				k := bytes.IndexByte(o.buf[i:o.tail], '"')
				if k < 0 {
					i = o.tail
					break
				}
				q := i + k
				n := 0
				for p := q - 1; o.buf[p] == '\\'; p-- {
					n++
				}
				i, inString = q+1, n%2 == 1
				continue
			}
			c := o.buf[i]
			i++
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					obj := bytes.Clone(o.buf[o.head:i])
					o.head = i
					if o.head == o.tail && cap(o.buf) > o.maxKeep {
						o.buf, o.head, o.tail = nil, 0, 0
					}
					return obj, nil
				}
			}
		}
		// Need more: keep the object's start, read on.
		consumed := i - o.head
		if err := o.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		i = o.head + consumed
	}
}

// messageWaiter is a stream of messages that can wait for the next one before a Read
// (zlibstream.Reader).
type messageWaiter interface{ WaitMessage() error }

// buffers holds the buffers of ObjectReaders waiting for a message.
var buffers sync.Pool

func (o *ObjectReader) putBuffer() {
	if o.buf != nil && cap(o.buf) <= o.maxKeep {
		b := o.buf[:cap(o.buf)]
		buffers.Put(&b)
	}
	o.buf, o.head, o.tail = nil, 0, 0
}

// fill reads more into buf after compacting it. One Read call: never more than the stream has ready.
func (o *ObjectReader) fill() error {
	if o.buf == nil {
		if b, ok := buffers.Get().(*[]byte); ok {
			o.buf = *b
		}
	}
	if o.head > 0 {
		n := copy(o.buf, o.buf[o.head:o.tail])
		o.head, o.tail = 0, n
	}
	if o.tail == len(o.buf) {
		size := max(2*len(o.buf), 1024) // small to start: idle connections are many
		nb := make([]byte, size)
		copy(nb, o.buf[:o.tail])
		o.buf = nb
	}
	n, err := o.r.Read(o.buf[o.tail:])
	o.tail += n
	if n > 0 {
		return nil
	}
	if err == nil {
		return io.ErrNoProgress
	}
	return err
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

// EachField calls fn with each top-level key (raw, without quotes; escapes are not decoded) and raw
// value of obj, in order, until fn returns false.
func EachField(obj []byte, fn func(key, value []byte) bool) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return ErrSyntax
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return ErrSyntax
		}
		kEnd := skipString(obj, i)
		if kEnd < 0 {
			return ErrSyntax
		}
		key := obj[i+1 : kEnd-1]
		i = skipSpace(obj, kEnd)
		if i >= len(obj) || obj[i] != ':' {
			return ErrSyntax
		}
		i = skipSpace(obj, i+1)
		vEnd := skipValue(obj, i)
		if vEnd < 0 {
			return ErrSyntax
		}
		if !fn(key, obj[i:vEnd]) {
			return nil
		}
		i = skipSpace(obj, vEnd)
		if i >= len(obj) {
			return ErrSyntax
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return nil
		default:
			return ErrSyntax
		}
	}
	return ErrSyntax
}

// Field returns the raw value of a top-level key of obj, or nil when absent.
func Field(obj []byte, key string) []byte {
	var out []byte
	_ = EachField(obj, func(k, v []byte) bool {
		if string(k) == key {
			out = v
			return false
		}
		return true
	})
	return out
}

// Int parses a raw JSON integer; ok is false for null, absence or anything else.
func Int(v []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// String returns a raw JSON string without its quotes, decoding escapes only when there are any.
func String(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	s, err := strconv.Unquote(string(v))
	if err != nil {
		return "", false
	}
	return s, true
}

// Snowflake parses an ID, given as a JSON string (Discord's form) or number.
func Snowflake(v []byte) (uint64, bool) {
	if len(v) >= 2 && v[0] == '"' {
		v = v[1 : len(v)-1]
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	return n, err == nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] (a quote), or -1: its next quote not
// escaped by an odd run of backslashes (found with IndexByte, not byte by byte).
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		n := 0
		for p := q - 1; b[p] == '\\'; p-- { // stops at the opening quote at the latest
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
	return -1
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
				if j < 0 {
					return -1
				}
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isSpace(b[j]) {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// EachElement calls fn with the raw value of each element of a JSON array, in order.
func EachElement(arr []byte, fn func(value []byte) bool) error {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return ErrSyntax
	}
	i = skipSpace(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for i < len(arr) {
		end := skipValue(arr, i)
		if end < 0 {
			return ErrSyntax
		}
		if !fn(arr[i:end]) {
			return nil
		}
		i = skipSpace(arr, end)
		if i >= len(arr) {
			return ErrSyntax
		}
		switch arr[i] {
		case ',':
			i = skipSpace(arr, i+1)
		case ']':
			return nil
		default:
			return ErrSyntax
		}
	}
	return ErrSyntax
}
