package delivery

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The Redis sink's entries are MessagePack, which is what @discordjs/brokers decodes (@msgpack/msgpack's
// decode): the envelope {"shardId":N,"payload":{...},"eventId":"..."} with the gateway payload as a map,
// not a JSON string, so that a bot reads data.payload.d.content as discord.js does. The payload is
// transcoded from its JSON in one pass, without building Go values: key order is kept, strings stay
// strings (str, never bin: the decoder would hand bin over as a Uint8Array), integers become MessagePack
// integers in their smallest form (Discord's snowflakes are JSON strings and stay strings), other
// numbers float64, as JavaScript's JSON.parse would read them.

// errMsgpackInput is what appendMsgpack returns for input that is not one JSON value.
var errMsgpackInput = errors.New("payload is not valid JSON")

// maxMsgpackDepth bounds the nesting of arrays and objects (Discord's payloads nest a handful deep).
const maxMsgpackDepth = 1000

// appendRedisEntry appends the MessagePack of {"shardId":shard,"payload":<payload>,"eventId":id}.
func appendRedisEntry(dst []byte, shard int, payload []byte, id string) ([]byte, error) {
	dst = append(dst, 0x83) // fixmap of 3
	dst = appendMsgpackString(dst, "shardId")
	dst = appendMsgpackInt(dst, int64(shard))
	dst = appendMsgpackString(dst, "payload")
	dst, err := appendMsgpack(dst, payload)
	if err != nil {
		return dst, err
	}
	dst = appendMsgpackString(dst, "eventId")
	return appendMsgpackString(dst, id), nil
}

// appendMsgpack appends the MessagePack of the JSON value in src (surrounding spaces allowed).
func appendMsgpack(dst, src []byte) ([]byte, error) {
	t := transcoder{src: src, dst: dst}
	if err := t.value(0); err != nil {
		return dst, err
	}
	if t.skipSpace(); t.i != len(t.src) {
		return dst, errMsgpackInput
	}
	return t.dst, nil
}

type transcoder struct {
	src, dst []byte
	i        int
}

func (t *transcoder) skipSpace() {
	for t.i < len(t.src) {
		switch t.src[t.i] {
		case ' ', '\t', '\n', '\r':
			t.i++
		default:
			return
		}
	}
}

func (t *transcoder) value(depth int) error {
	t.skipSpace()
	if t.i >= len(t.src) {
		return errMsgpackInput
	}
	switch c := t.src[t.i]; {
	case c == '{' || c == '[':
		if depth >= maxMsgpackDepth {
			return errMsgpackInput
		}
		return t.container(depth, c == '{')
	case c == '"':
		return t.string()
	case c == 't':
		return t.literal("true", 0xc3)
	case c == 'f':
		return t.literal("false", 0xc2)
	case c == 'n':
		return t.literal("null", 0xc0)
	case c == '-' || (c >= '0' && c <= '9'):
		return t.number()
	}
	return errMsgpackInput
}

func (t *transcoder) literal(word string, code byte) error {
	if len(t.src)-t.i < len(word) || string(t.src[t.i:t.i+len(word)]) != word {
		return errMsgpackInput
	}
	t.i += len(word)
	t.dst = append(t.dst, code)
	return nil
}

// container transcodes an object or an array. Its element count is known only at its end, so one header
// byte (a fixmap or fixarray, which most of Discord's objects fit) is reserved and, for 16 elements or
// more, widened afterwards by moving what follows it.
func (t *transcoder) container(depth int, object bool) error {
	t.i++ // '{' or '['
	head := len(t.dst)
	t.dst = append(t.dst, 0)
	closer := byte(']')
	if object {
		closer = '}'
	}
	n := 0
	t.skipSpace()
	if t.i < len(t.src) && t.src[t.i] == closer {
		t.i++
	} else {
		for {
			if object {
				if t.skipSpace(); t.i >= len(t.src) || t.src[t.i] != '"' {
					return errMsgpackInput
				}
				if err := t.string(); err != nil {
					return err
				}
				if t.skipSpace(); t.i >= len(t.src) || t.src[t.i] != ':' {
					return errMsgpackInput
				}
				t.i++
			}
			if err := t.value(depth + 1); err != nil {
				return err
			}
			n++
			t.skipSpace()
			if t.i >= len(t.src) {
				return errMsgpackInput
			}
			c := t.src[t.i]
			t.i++
			if c == closer {
				break
			}
			if c != ',' {
				return errMsgpackInput
			}
		}
	}
	var hdr []byte
	switch {
	case n < 16:
		if object {
			t.dst[head] = 0x80 | byte(n)
		} else {
			t.dst[head] = 0x90 | byte(n)
		}
		return nil
	case n <= math.MaxUint16:
		hdr = binary.BigEndian.AppendUint16([]byte{0xdc}, uint16(n))
		if object {
			hdr[0] = 0xde
		}
	default:
		hdr = binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
		if object {
			hdr[0] = 0xdf
		}
	}
	end := len(t.dst)
	t.dst = append(t.dst, hdr[1:]...) // room for the wider header
	copy(t.dst[head+len(hdr):], t.dst[head+1:end])
	copy(t.dst[head:], hdr)
	return nil
}

// string transcodes a JSON string as a MessagePack str: escapes decoded, and invalid UTF-8 (or a lone
// surrogate escape) replaced by U+FFFD, as encoding/json does.
func (t *transcoder) string() error {
	t.i++ // opening quote
	start := t.i
	// The common case: no escape, valid UTF-8: copied as it is.
	for t.i < len(t.src) {
		c := t.src[t.i]
		if c == '"' {
			if s := t.src[start:t.i]; utf8.Valid(s) {
				t.dst = appendMsgpackStrHeader(t.dst, len(s))
				t.dst = append(t.dst, s...)
				t.i++
				return nil
			}
			break
		}
		if c == '\\' || c < 0x20 {
			break
		}
		t.i++
	}
	t.i = start
	var buf []byte
	for {
		if t.i >= len(t.src) {
			return errMsgpackInput
		}
		c := t.src[t.i]
		switch {
		case c == '"':
			t.i++
			t.dst = appendMsgpackStrHeader(t.dst, len(buf))
			t.dst = append(t.dst, buf...)
			return nil
		case c < 0x20:
			return errMsgpackInput
		case c == '\\':
			if t.i+1 >= len(t.src) {
				return errMsgpackInput
			}
			e := t.src[t.i+1]
			t.i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := t.hex4()
				if !ok {
					return errMsgpackInput
				}
				if utf16.IsSurrogate(r) {
					r2 := utf8.RuneError
					if t.i+1 < len(t.src) && t.src[t.i] == '\\' && t.src[t.i+1] == 'u' {
						save := t.i
						t.i += 2
						lo, ok := t.hex4()
						if !ok {
							return errMsgpackInput
						}
						if r2 = utf16.DecodeRune(r, lo); r2 == utf8.RuneError {
							t.i = save // not a pair: the second escape stands alone
						}
					}
					r = r2
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return errMsgpackInput
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			t.i++
		default:
			r, size := utf8.DecodeRune(t.src[t.i:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, t.src[t.i:t.i+size]...)
			}
			t.i += size
		}
	}
}

func (t *transcoder) hex4() (rune, bool) {
	if len(t.src)-t.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range t.src[t.i : t.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	t.i += 4
	return r, true
}

// number transcodes a JSON number: an integer literal that fits 64 bits as an integer, anything else
// (a fraction, an exponent, a larger integer) as a float64, the double JavaScript would read.
func (t *transcoder) number() error {
	start := t.i
	if t.src[t.i] == '-' {
		t.i++
	}
	digits := func() int {
		n := 0
		for t.i < len(t.src) && t.src[t.i] >= '0' && t.src[t.i] <= '9' {
			t.i++
			n++
		}
		return n
	}
	intStart := t.i
	if n := digits(); n == 0 || (n > 1 && t.src[intStart] == '0') {
		return errMsgpackInput
	}
	integer := true
	if t.i < len(t.src) && t.src[t.i] == '.' {
		t.i++
		if digits() == 0 {
			return errMsgpackInput
		}
		integer = false
	}
	if t.i < len(t.src) && (t.src[t.i] == 'e' || t.src[t.i] == 'E') {
		t.i++
		if t.i < len(t.src) && (t.src[t.i] == '+' || t.src[t.i] == '-') {
			t.i++
		}
		if digits() == 0 {
			return errMsgpackInput
		}
		integer = false
	}
	lit := string(t.src[start:t.i])
	if integer {
		if v, err := strconv.ParseInt(lit, 10, 64); err == nil {
			t.dst = appendMsgpackInt(t.dst, v)
			return nil
		}
		if v, err := strconv.ParseUint(lit, 10, 64); err == nil {
			t.dst = binary.BigEndian.AppendUint64(append(t.dst, 0xcf), v)
			return nil
		}
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range: ±Inf, as JSON.parse reads it
		return errMsgpackInput
	}
	t.dst = binary.BigEndian.AppendUint64(append(t.dst, 0xcb), math.Float64bits(f))
	return nil
}

func appendMsgpackInt(dst []byte, v int64) []byte {
	switch {
	case v >= 0 && v <= 0x7f:
		return append(dst, byte(v))
	case v < 0 && v >= -32:
		return append(dst, byte(v))
	case v >= 0 && v <= math.MaxUint8:
		return append(dst, 0xcc, byte(v))
	case v >= 0 && v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(v))
	case v >= 0 && v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(v))
	case v >= 0:
		return binary.BigEndian.AppendUint64(append(dst, 0xcf), uint64(v))
	case v >= math.MinInt8:
		return append(dst, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
	}
}

func appendMsgpackStrHeader(dst []byte, n int) []byte {
	switch {
	case n < 32:
		return append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		return append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
}

func appendMsgpackString(dst []byte, s string) []byte {
	return append(appendMsgpackStrHeader(dst, len(s)), s...)
}
