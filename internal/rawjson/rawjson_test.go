package rawjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

func TestObjectReaderSplitsAStreamOfObjects(t *testing.T) {
	in := ` {"a":"}{\"","b":[1,{"c":"]"}]}` + "\n" + `{"op":0,"d":{"x":"\\"}}{}`
	// One byte per Read: an object split anywhere must still come out whole.
	r := NewObjectReader(iotest.OneByteReader(strings.NewReader(in)))
	want := []string{`{"a":"}{\"","b":[1,{"c":"]"}]}`, `{"op":0,"d":{"x":"\\"}}`, `{}`}
	for _, w := range want {
		got, err := r.Next()
		if err != nil || string(got) != w {
			t.Fatalf("Next = %q, %v; want %q", got, err, w)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last object: %v, want EOF", err)
	}
}

// The reader must return an object as soon as its closing brace is read, without asking the stream
// for more (the next websocket message may be minutes away).
func TestObjectReaderDoesNotReadPastTheObject(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewObjectReader(pr)
	go pw.Write([]byte(`{"op":11}`))
	done := make(chan []byte)
	go func() { obj, _ := r.Next(); done <- obj }()
	if got := <-done; string(got) != `{"op":11}` {
		t.Fatalf("got %q", got)
	}
	pw.Close()
}

func TestObjectReaderRejectsNonObjectsAndTruncation(t *testing.T) {
	if _, err := NewObjectReader(strings.NewReader(`[1]`)).Next(); !errors.Is(err, ErrSyntax) {
		t.Errorf("array: %v", err)
	}
	if _, err := NewObjectReader(strings.NewReader(`{"a":1`)).Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
}

func TestFieldsAgreeWithEncodingJSON(t *testing.T) {
	payloads := []string{
		`{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"id":"123","content":"a \"quoted\" {brace}","edited_timestamp":null,"n":[1,2,{"x":"]"}]}}`,
		`{ "op" : 11 , "d" : null , "s" : null , "t" : null }`,
		`{"op":10,"d":{"heartbeat_interval":41250,"_trace":["x"]}}`,
		`{"d":true,"op":9}`,
	}
	for _, p := range payloads {
		var want map[string]json.RawMessage
		if err := json.Unmarshal([]byte(p), &want); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		if err := EachField([]byte(p), func(k, v []byte) bool { got[string(k)] = string(v); return true }); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: fields %v, want %v", p, got, want)
		}
		for k, v := range want {
			var a, b any
			_ = json.Unmarshal(v, &a)
			if err := json.Unmarshal([]byte(got[k]), &b); err != nil || !jsonEqual(a, b) {
				t.Errorf("%s: field %s = %q, want %q", p, k, got[k], v)
			}
		}
	}
	d := Field([]byte(payloads[0]), "d")
	if id, ok := Snowflake(Field(d, "id")); !ok || id != 123 {
		t.Errorf("d.id = %d, %v", id, ok)
	}
	if s, ok := String(Field(d, "content")); !ok || s != `a "quoted" {brace}` {
		t.Errorf("d.content = %q, %v", s, ok)
	}
	if n, ok := Int(Field([]byte(payloads[0]), "s")); !ok || n != 42 {
		t.Errorf("s = %d", n)
	}
	if _, ok := Int(Field([]byte(payloads[1]), "s")); ok {
		t.Error("null parsed as an integer")
	}
	if Field([]byte(payloads[1]), "absent") != nil {
		t.Error("absent field found")
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestMalformedFieldsAreErrors(t *testing.T) {
	for _, bad := range []string{``, `[]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":"x`, `{"a":1 "b":2}`} {
		if err := EachField([]byte(bad), func(k, v []byte) bool { return true }); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzEachFieldNeverPanics(f *testing.F) {
	f.Add(`{"op":0,"d":{"a":[1,"]"]}}`)
	f.Add(`{"a":"\\"}`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = EachField([]byte(s), func(k, v []byte) bool { return true })
		r := NewObjectReader(strings.NewReader(s))
		for i := 0; i < 10; i++ {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	})
}

var discordPayload = []byte(`{"t":"MESSAGE_CREATE","s":1234,"op":0,"d":{"type":0,"tts":false,"timestamp":"2026-11-24T03:00:00.000000+00:00","pinned":false,"nonce":"evt-1","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":[],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2026-01-01T00:00:00.000000+00:00","flags":0,"deaf":false,"communication_disabled_until":null,"avatar":null},"id":"1574627755297865729","flags":0,"embeds":[],"edited_timestamp":null,"content":"hello there, this is a message of typical length for a bot","components":[],"channel_id":"754679441002594320","author":{"username":"someone","public_flags":0,"id":"80351110224678912","global_name":"Someone","discriminator":"0","avatar":"a_d5efa99b3eeaa7dd43acca82f5692432"},"attachments":[],"guild_id":"754679441002594304"}}`)

func BenchmarkHeaderRawjson(b *testing.B) {
	b.SetBytes(int64(len(discordPayload)))
	for i := 0; i < b.N; i++ {
		_ = EachField(discordPayload, func(k, v []byte) bool { return true })
	}
}

func BenchmarkHeaderEncodingJSON(b *testing.B) {
	b.SetBytes(int64(len(discordPayload)))
	var h struct {
		Op int     `json:"op"`
		S  *int64  `json:"s"`
		T  *string `json:"t"`
	}
	for i := 0; i < b.N; i++ {
		_ = json.Unmarshal(discordPayload, &h)
	}
}

func TestEachElement(t *testing.T) {
	var got []string
	err := EachElement([]byte(` [ {"a":[1,"]"]}, 2 ,"x,y",null]`), func(v []byte) bool { got = append(got, string(v)); return true })
	if err != nil || strings.Join(got, "|") != `{"a":[1,"]"]}|2|"x,y"|null` {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, bad := range []string{`{}`, `[1,]`, `[1 2]`, `[`} {
		if err := EachElement([]byte(bad), func([]byte) bool { return true }); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSnowflakeAcceptsOnlyIDs(t *testing.T) {
	for _, bad := range []string{``, `""`, `"-1"`, `"1a"`, `null`, `"99999999999999999999999"`} {
		if _, ok := Snowflake([]byte(bad)); ok {
			t.Errorf("%q accepted as an id", bad)
		}
	}
	if v, ok := Snowflake([]byte(`"18446744073709551615"`)); !ok || v != 1<<64-1 {
		t.Errorf("the largest id: %d, %v", v, ok)
	}
	if v, ok := Snowflake([]byte(`80351110224678912`)); !ok || v != 80351110224678912 {
		t.Errorf("an id given as a number: %d, %v", v, ok)
	}
}

// chunkReader returns at most the next size() bytes per Read.
type chunkReader struct {
	b    []byte
	size func() int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.size(), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// Strings full of backslashes, quotes and brackets, as encoding/json writes them, end where encoding/json
// says, however the stream is split: the object reader finds each object, and EachField each value.
func TestStringsWithEscapesEndWhereEncodingJSONSays(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{`\`, `\\`, `"`, `\"`, `}`, `{`, `]`, `[`, `a`, `é`, "\n", `\u00e9`}
	randString := func() string {
		var sb strings.Builder
		for range rnd.IntN(12) {
			sb.WriteString(alphabet[rnd.IntN(len(alphabet))])
		}
		return sb.String()
	}
	for round := range 200 {
		var stream []byte
		var want [][]byte
		for range 1 + rnd.IntN(5) {
			obj, err := json.Marshal(map[string]any{"t": randString(), "d": map[string]any{randString(): []any{randString(), randString()}}, "s": rnd.IntN(100)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, obj)
			stream = append(stream, obj...)
		}
		r := NewObjectReader(&chunkReader{b: stream, size: func() int { return 1 + rnd.IntN(16) }})
		for i, w := range want {
			got, err := r.Next()
			if err != nil || string(got) != string(w) {
				t.Fatalf("round %d, object %d: %q, %v; want %q", round, i, got, err, w)
			}
			var dec map[string]json.RawMessage
			if err := json.Unmarshal(w, &dec); err != nil {
				t.Fatal(err)
			}
			n := 0
			if err := EachField(got, func(k, v []byte) bool {
				n++
				if string(v) != string(dec[string(k)]) {
					t.Fatalf("round %d: field %s = %q, want %q", round, k, v, dec[string(k)])
				}
				return true
			}); err != nil || n != len(dec) {
				t.Fatalf("round %d: EachField: %v, %d fields of %d", round, err, n, len(dec))
			}
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("round %d: after the last object: %v", round, err)
		}
	}
}

// BenchmarkObjectReader reads a stream of gateway MESSAGE_CREATEs, one object per Next.
func BenchmarkObjectReader(b *testing.B) {
	stream := bytes.Repeat(discordPayload, 256)
	b.SetBytes(int64(len(discordPayload)))
	b.ReportAllocs()
	r := NewObjectReader(bytes.NewReader(stream))
	for i := range b.N {
		if i%256 == 0 {
			r = NewObjectReader(bytes.NewReader(stream))
		}
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}
