package delivery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// fromJSON decodes JSON as the transcoder's promise says a MessagePack reader sees it: objects as maps,
// integers that fit 64 bits as integers, other numbers as float64, strings as encoding/json decodes them.
func fromJSON(t testing.TB, src []byte) any {
	d := json.NewDecoder(bytes.NewReader(src))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decoding %q: %v", src, err)
	}
	return normalize(v)
}

func normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		s := v.String()
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return i
			}
			if u, err := strconv.ParseUint(s, 10, 64); err == nil {
				return u
			}
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case map[string]any:
		for k, e := range v {
			v[k] = normalize(e)
		}
	case []any:
		for i, e := range v {
			v[i] = normalize(e)
		}
	}
	return v
}

// fromMsgpack decodes with vmihailenco/msgpack into the same shapes as fromJSON.
func fromMsgpack(t testing.TB, b []byte) any {
	d := msgpack.NewDecoder(bytes.NewReader(b))
	d.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	v, err := d.DecodeInterface()
	if err != nil {
		t.Fatalf("decoding MessagePack % x: %v", b, err)
	}
	if rest, _ := d.Buffered().Read(make([]byte, 1)); rest != 0 {
		t.Fatalf("MessagePack % x has bytes after its value", b)
	}
	return widen(v)
}

func widen(v any) any {
	switch v := v.(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k.(string)] = widen(e)
		}
		return m
	case map[string]any:
		for k, e := range v {
			v[k] = widen(e)
		}
	case []any:
		for i, e := range v {
			v[i] = widen(e)
		}
	}
	return v
}

func checkTranscode(t testing.TB, src string) {
	got, err := appendMsgpack(nil, []byte(src))
	if err != nil {
		t.Fatalf("appendMsgpack(%q): %v", src, err)
	}
	want := fromJSON(t, []byte(src))
	if dec := fromMsgpack(t, got); !reflect.DeepEqual(dec, want) {
		t.Fatalf("%q transcoded reads back as %#v, want %#v", src, dec, want)
	}
}

func TestMsgpackReadsBackAsTheJSON(t *testing.T) {
	big := func(n int, obj bool) string {
		var b strings.Builder
		if obj {
			b.WriteString("{")
		} else {
			b.WriteString("[")
		}
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			if obj {
				fmt.Fprintf(&b, `"k%d":`, i)
			}
			fmt.Fprintf(&b, `{"i":%d,"s":"%s"}`, i, strings.Repeat("x", i%40))
		}
		if obj {
			b.WriteString("}")
		} else {
			b.WriteString("]")
		}
		return b.String()
	}
	for _, src := range []string{
		`{"op":0,"t":"MESSAGE_CREATE","s":42,"d":{"id":"1234567890123456789","content":"h\u00e9llo \"q\" é\n","tts":false,"nonce":null}}`,
		` [ 1 , -1, 0, -0, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649 ] `,
		`[9223372036854775807, -9223372036854775808, 9223372036854775808, 18446744073709551615, 18446744073709551616, 1e400, -1e400]`,
		`[1.5, 1.0, 1e3, 2E-3, -0.0, 123456789012345678901234567890]`,
		`["", "a", "\/\\\b\f\n\r\t", "\ud83d\ude00", "\ud83d", "\ude00x", "\ud83dx", "\ud83d\u0041", "日本語", "` + strings.Repeat("y", 40) + `", "` + strings.Repeat("z", 300) + `", "` + strings.Repeat("w", 70000) + `"]`,
		"[\"bad \xff utf8\", \"ok \xe2\x82\xac\"]",
		`{}`, `[]`, `{"a":{}}`, `[[],[[]]]`, `true`, `null`, `"x"`, `{"dup":1,"dup":2}`,
		big(15, true), big(16, true), big(15, false), big(16, false), big(65535, false), big(65536, true),
		`{"a":` + big(20, false) + `,"b":` + big(17, true) + `}`,
	} {
		checkTranscode(t, src)
	}
}

func TestMsgpackRefusesWhatIsNotJSON(t *testing.T) {
	for _, src := range []string{``, `{`, `[1,]`, `{"a" 1}`, `{"a":1,}`, `{a:1}`, `01`, `1.`, `.5`, `-`, `1e`, `tru`, `nul`,
		`"abc`, `"\x"`, `"\u12"`, "\"a\x01\"", `{} {}`, `[1 2]`, `"\ud83d\u12"`, strings.Repeat("[", 2000) + strings.Repeat("]", 2000)} {
		if out, err := appendMsgpack(nil, []byte(src)); err == nil {
			t.Errorf("appendMsgpack(%.40q) = % x, want an error", src, out)
		}
	}
}

func TestRedisEntryIsTheEnvelopeDiscordJSReads(t *testing.T) {
	payload := `{"op":0,"t":"MESSAGE_CREATE","s":7,"d":{"content":"hi","guild_id":"81384788765712384"}}`
	b, err := appendRedisEntry(nil, 3, []byte(payload), "inst-77")
	if err != nil {
		t.Fatal(err)
	}
	got := fromMsgpack(t, b)
	want := map[string]any{"shardId": int64(3), "payload": fromJSON(t, []byte(payload)), "eventId": "inst-77"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entry reads back as %#v, want %#v", got, want)
	}
}

func FuzzMsgpackReadsBackAsTheJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x",null,true]}`, `"\ud83d\ude00"`, `[-129, 1e5]`, `{"k":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		out, err := appendMsgpack(nil, src)
		if !json.Valid(src) {
			if err == nil {
				t.Fatalf("appendMsgpack accepted %q, which is not JSON", src)
			}
			return
		}
		if err != nil {
			if bytes.Count(src, []byte("["))+bytes.Count(src, []byte("{")) >= maxMsgpackDepth {
				return
			}
			t.Fatalf("appendMsgpack(%q): %v", src, err)
		}
		if dec, want := fromMsgpack(t, out), fromJSON(t, src); !reflect.DeepEqual(dec, want) {
			t.Fatalf("%q reads back as %#v, want %#v", src, dec, want)
		}
	})
}

func BenchmarkRedisEntry(b *testing.B) {
	payload := []byte(`{"op":0,"t":"MESSAGE_CREATE","s":123456,"d":{"type":0,"tts":false,"timestamp":"2024-01-01T00:00:00.000000+00:00","pinned":false,"nonce":"1192839120938123","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":["111","222"],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2023-01-01T00:00:00.000000+00:00","flags":0,"deaf":false,"avatar":null},"id":"1192839121234567890","flags":0,"embeds":[],"edited_timestamp":null,"content":"hello there, this is a message of an ordinary length \u00e9","components":[],"channel_id":"1192839120000000000","author":{"username":"someone","public_flags":0,"id":"1192839000000000000","global_name":"Some One","discriminator":"0","avatar":"a_0123456789abcdef0123456789abcdef"},"attachments":[],"guild_id":"1192830000000000000"}}`)
	b.SetBytes(int64(len(payload)))
	buf := make([]byte, 0, 2048)
	for b.Loop() {
		var err error
		if buf, err = appendRedisEntry(buf[:0], 1, payload, "0123456789abcdef-123456"); err != nil {
			b.Fatal(err)
		}
	}
}
