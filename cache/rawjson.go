package cache

import (
	"strconv"

	"github.com/ddhq/dd/internal/rawjson"
)

// The cache walks gateway JSON in place instead of decoding it into maps or structs: it only needs to
// find a few ids and copy the kept fields' bytes, and a GUILD_CREATE of a large guild holds hundreds of
// thousands of objects. The walking itself is package rawjson's; these wrappers add what the cache's code
// wants: callbacks that can fail, and null standing for an empty array.

var errSyntax = rawjson.ErrSyntax

// eachField calls fn with every member of the JSON object obj: the key's bytes (between the quotes,
// escapes left as they are) and the value's raw bytes. fn's error stops the walk and is returned.
func eachField(obj []byte, fn func(key, val []byte) error) error {
	var ferr error
	err := rawjson.EachField(obj, func(k, v []byte) bool {
		ferr = fn(k, v)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// eachElem calls fn with every element of the JSON array arr. null counts as an empty array.
func eachElem(arr []byte, fn func(val []byte) error) error {
	if isNull(arr) {
		return nil
	}
	var ferr error
	err := rawjson.EachElement(arr, func(v []byte) bool {
		ferr = fn(v)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// field returns the value of the object's member called name.
func field(obj []byte, name string) (val []byte, found bool) {
	v := rawjson.Field(obj, name)
	return v, v != nil
}

func isNull(v []byte) bool {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[0] == '\n' || v[0] == '\r') {
		v = v[1:]
	}
	return len(v) >= 4 && string(v[:4]) == "null"
}

func isTrue(v []byte) bool { return string(v) == "true" }

// parseID reads a snowflake given as a JSON string ("123", as Discord sends them) or a number: decimal
// digits without a sign or leading zeros, non-zero, within 64 bits. Anything else is (0, false): a
// 29-digit id must not be stored as the largest uint64.
func parseID(v []byte) (uint64, bool) {
	if len(v) >= 2 && v[0] == '"' {
		if v[len(v)-1] != '"' {
			return 0, false
		}
		v = v[1 : len(v)-1]
	}
	if len(v) == 0 || len(v) > 20 || v[0] == '0' {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, ok := rawjson.Snowflake(v)
	if !ok {
		return 0, false
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

// unquote returns a JSON string's contents, decoding escapes only when there are any.
func unquote(v []byte) (string, bool) { return rawjson.String(v) }

// appendID appends a snowflake as Discord writes it: a JSON string.
func appendID(dst []byte, id uint64) []byte {
	dst = append(dst, '"')
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, '"')
}
