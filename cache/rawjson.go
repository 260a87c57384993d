package cache

import (
	"errors"
	"fmt"
	"strconv"
)

// The cache walks gateway JSON in place instead of decoding it into maps or structs: it only needs to
// find a few ids and copy the kept fields' bytes, and a GUILD_CREATE of a large guild holds hundreds of
// thousands of objects. The payloads are valid JSON (the gateway decoded them, POST /events checks them);
// the walker still fails cleanly on malformed input rather than trusting it.

var errSyntax = errors.New("malformed JSON")

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, err := stringEnd(b, i)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errSyntax
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || isSpace(c) {
				break
			}
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		return j, nil
	}
}

// stringEnd returns the index just past the string starting at b[i] (a '"').
func stringEnd(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errSyntax
}

// eachField calls fn with every member of the JSON object obj: the key's bytes (between the quotes,
// escapes left as they are) and the value's raw bytes.
func eachField(obj []byte, fn func(key, val []byte) error) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return fmt.Errorf("%w: want an object", errSyntax)
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errSyntax
		}
		kEnd, err := stringEnd(obj, i)
		if err != nil {
			return err
		}
		key := obj[i+1 : kEnd-1]
		i = skipSpace(obj, kEnd)
		if i >= len(obj) || obj[i] != ':' {
			return errSyntax
		}
		i = skipSpace(obj, i+1)
		vEnd, err := valueEnd(obj, i)
		if err != nil {
			return err
		}
		if err := fn(key, obj[i:vEnd]); err != nil {
			return err
		}
		i = skipSpace(obj, vEnd)
		if i >= len(obj) {
			return errSyntax
		}
		if obj[i] == '}' {
			return nil
		}
		if obj[i] != ',' {
			return errSyntax
		}
		i = skipSpace(obj, i+1)
	}
}

// eachElem calls fn with every element of the JSON array arr. null counts as an empty array.
func eachElem(arr []byte, fn func(val []byte) error) error {
	i := skipSpace(arr, 0)
	if isNull(arr) {
		return nil
	}
	if i >= len(arr) || arr[i] != '[' {
		return fmt.Errorf("%w: want an array", errSyntax)
	}
	i = skipSpace(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for {
		end, err := valueEnd(arr, i)
		if err != nil {
			return err
		}
		if err := fn(arr[i:end]); err != nil {
			return err
		}
		i = skipSpace(arr, end)
		if i >= len(arr) {
			return errSyntax
		}
		if arr[i] == ']' {
			return nil
		}
		if arr[i] != ',' {
			return errSyntax
		}
		i = skipSpace(arr, i+1)
	}
}

// field returns the value of the object's member called name.
func field(obj []byte, name string) (val []byte, found bool) {
	_ = eachField(obj, func(k, v []byte) error {
		if string(k) == name {
			val, found = v, true
			return errStop
		}
		return nil
	})
	return val, found
}

var errStop = errors.New("stop")

func isNull(v []byte) bool {
	i := skipSpace(v, 0)
	return len(v)-i >= 4 && string(v[i:i+4]) == "null"
}

func isTrue(v []byte) bool { return string(v) == "true" }

// parseID reads a snowflake given as a JSON string ("123", as Discord sends them) or a number.
func parseID(v []byte) (uint64, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// idField reads the snowflake at obj[name]; 0 and false when it is absent or not an id.
func idField(obj []byte, name string) (uint64, bool) {
	v, ok := field(obj, name)
	if !ok {
		return 0, false
	}
	return parseID(v)
}

// unquote returns a JSON string's contents when it has no escapes (event names, statuses).
func unquote(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	s := v[1 : len(v)-1]
	for _, c := range s {
		if c == '\\' {
			u, err := strconv.Unquote(string(v))
			return u, err == nil
		}
	}
	return string(s), true
}

// appendID appends a snowflake as Discord writes it: a JSON string.
func appendID(dst []byte, id uint64) []byte {
	dst = append(dst, '"')
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, '"')
}
