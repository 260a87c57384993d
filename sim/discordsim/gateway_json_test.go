package discordsim

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// jsonRand makes random values of the firehose's types, with what encoding/json treats specially: nil
// and empty lists, nil pointers, strings needing escapes (HTML characters, quotes, control characters,
// U+2028, invalid UTF-8) and plain ones, raw JSON with spaces and without.
type jsonRand struct{ r *rand.Rand }

func (j jsonRand) str() string {
	pieces := []string{"", "plain", "123456789012345678", "<b>", "a&b", `q"uote`, `back\slash`, "tab\there",
		"nl\n", "\x00", "é", "👍", "\u2028", "\u2029", "\xff", "\xe2\x80", "fin", " ", "/", "\x7f"}
	var b []byte
	for range j.r.IntN(4) {
		b = append(b, pieces[j.r.IntN(len(pieces))]...)
	}
	if j.r.IntN(3) == 0 {
		return "plain-" + FormatID(j.r.Uint64())
	}
	return string(b)
}

func (j jsonRand) ptr() *string {
	if j.r.IntN(2) == 0 {
		return nil
	}
	s := j.str()
	return &s
}

func (j jsonRand) strs() []string {
	switch j.r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	out := make([]string, 1+j.r.IntN(3))
	for i := range out {
		out[i] = j.str()
	}
	return out
}

func (j jsonRand) raw() json.RawMessage {
	list := []string{`"evt-1"`, `{"a":1}`, `{"type":"link","description":"unfurled link"}`, `"a \" b"`, `"\\"`, `["x y",1]`, `{ "a" : [1, 2] }`, `"<x>"`, `"é"`, `null`, `[{"type":"link","url":"https://example.com/x"}]`,
		`123`, `"a\u2028b"`}
	return json.RawMessage(list[j.r.IntN(len(list))])
}

func (j jsonRand) raws() []json.RawMessage {
	switch j.r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []json.RawMessage{}
	}
	out := make([]json.RawMessage, 1+j.r.IntN(3))
	for i := range out {
		out[i] = j.raw()
	}
	return out
}

func (j jsonRand) user() simUser {
	return simUser{ID: j.str(), Username: j.str(), Discriminator: j.str(), GlobalName: j.ptr(), Avatar: j.ptr(),
		Bot: j.r.IntN(2) == 0, PublicFlags: j.r.IntN(1000) - 500}
}

func (j jsonRand) member() simMember {
	m := simMember{Nick: j.ptr(), Avatar: j.ptr(), Roles: j.strs(), JoinedAt: j.str(), PremiumSince: j.ptr(),
		Deaf: j.r.IntN(2) == 0, Mute: j.r.IntN(2) == 0, Flags: j.r.IntN(100), Pending: j.r.IntN(2) == 0,
		CommunicationDisabledUntil: j.ptr()}
	if j.r.IntN(2) == 0 {
		u := j.user()
		m.User = &u
	}
	return m
}

func (j jsonRand) message() simMessage {
	m := simMessage{ID: j.str(), Type: j.r.IntN(20), ChannelID: j.str(), GuildID: j.str(), Author: j.user(),
		Content: j.str(), Timestamp: j.str(), EditedTimestamp: j.ptr(), TTS: j.r.IntN(2) == 0,
		MentionEveryone: j.r.IntN(2) == 0, MentionRoles: j.strs(), Embeds: j.raws(), Components: j.raws(),
		Pinned: j.r.IntN(2) == 0, Flags: j.r.IntN(100), WebhookID: j.str(), ApplicationID: j.str()}
	if j.r.IntN(2) == 0 {
		mem := j.member()
		m.Member = &mem
	}
	switch j.r.IntN(3) {
	case 1:
		m.Mentions = []simUser{}
	case 2:
		m.Mentions = []simUser{j.user(), j.user()}
	}
	switch j.r.IntN(3) {
	case 1:
		m.Attachments = []simAttachment{}
	case 2:
		m.Attachments = []simAttachment{{ID: j.str(), Filename: j.str(), Description: j.str(), Size: 5, URL: j.str()}}
	}
	if j.r.IntN(2) == 0 {
		m.Nonce = j.raw()
	}
	return m
}

// The hand-written JSON is encoding/json's, byte for byte.
func TestFirehoseJSONMatchesEncodingJSON(t *testing.T) {
	j := jsonRand{rand.New(rand.NewPCG(7, 11))}
	check := func(what string, got []byte, v any) {
		t.Helper()
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
		}
	}
	for range 3000 {
		m := j.message()
		check("message", appendMessage(nil, &m), m)
		u := j.user()
		check("user", appendUser([]byte{}, &u), u)
		mem := j.member()
		check("member", appendMember(nil, &mem), mem)
		ma := gwMemberAdd{simMember: j.member(), GuildID: j.str()}
		check("member add", appendMemberAdd(nil, &ma), ma)
		ty := gwTyping{ChannelID: j.str(), GuildID: j.str(), UserID: j.str(), Timestamp: j.r.Int64() - j.r.Int64(),
			Member: j.member()}
		check("typing", appendTyping(nil, &ty), ty)
		ra := gwReactionAdd{UserID: j.str(), ChannelID: j.str(), MessageID: j.str(), GuildID: j.str(), Member: j.member(),
			Emoji: simEmoji{ID: j.ptr(), Name: j.str()}, MessageAuthorID: j.str(), Burst: j.r.IntN(2) == 0,
			BurstColors: j.strs(), Type: j.r.IntN(3)}
		check("reaction", appendReactionAdd(nil, &ra), ra)
		em := simEmbed{Type: j.str(), URL: j.str(), Title: j.str(), Description: j.str()}
		check("embed", appendEmbed(nil, &em), em)
	}
}

// discordTime's digits are time.Format's.
func TestDiscordTimeMatchesFormat(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for range 100000 {
		tm := time.Unix(r.Int64N(253402300799), r.Int64N(1e9)).In(time.FixedZone("x", r.IntN(50000)-25000))
		if got, want := discordTime(tm), tm.UTC().Format("2006-01-02T15:04:05.000000+00:00"); got != want {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
	for _, tm := range []time.Time{{}, time.Unix(-1e11, 0), time.Unix(1e12, 5)} {
		if got, want := discordTime(tm), tm.UTC().Format("2006-01-02T15:04:05.000000+00:00"); got != want {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
}

// The firehose's events are valid JSON of the right shape, and a MESSAGE_CREATE's stripped variant
// differs only by its empty content.
func TestFirehoseEventsJSON(t *testing.T) {
	s := New(Config{Guilds: 8})
	f := &firehose{g: s.gw, opts: FirehoseOptions{MessageCreate: 60, MessageUpdate: 15, MemberAdd: 5, TypingStart: 10,
		ReactionAdd: 10}, rnd: 9}
	strip := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuildMessages}
	seen := map[string]int{}
	for range 2000 {
		e := f.next()
		seen[e.name]++
		var d map[string]json.RawMessage
		if err := json.Unmarshal(e.data, &d); err != nil {
			t.Fatalf("%s: %v: %s", e.name, err, e.data)
		}
		if d["guild_id"] == nil {
			t.Fatalf("%s without guild_id: %s", e.name, e.data)
		}
		if e.name == "MESSAGE_CREATE" || e.name == "MESSAGE_UPDATE" {
			var m, sm simMessage
			if json.Unmarshal(e.data, &m) != nil || json.Unmarshal(e.payloadFor(strip), &sm) != nil {
				t.Fatalf("%s / %s", e.data, e.payloadFor(strip))
			}
			if m.Content == "" || sm.Content != "" || e.name == "MESSAGE_CREATE" && string(m.Nonce) != `"`+eventKey(e.n)+`"` {
				t.Fatalf("content %q, stripped %q, nonce %s (key %s)", m.Content, sm.Content, m.Nonce, eventKey(e.n))
			}
			if len(m.Embeds) > 0 {
				seen["with an embed"]++
			}
			// The stripped variant is the message rendered again with content and embeds emptied, as
			// stripMessageJSON would give it, and as encoding/json writes it.
			m.Content, m.Embeds = "", []json.RawMessage{}
			if a, b := mustMarshal(m), e.payloadFor(strip); !bytes.Equal(a, b) {
				t.Fatalf("stripped differs by more than content and embeds:\n%s\n%s", a, b)
			}
			if a, _ := stripMessageJSON(e.data); !jsonEqual(a, e.payloadFor(strip)) {
				t.Fatalf("stripMessageJSON gives\n%s\nthe firehose\n%s", a, e.payloadFor(strip))
			}
		}
	}
	if len(seen) != 6 {
		t.Errorf("event kinds %v, want 5 and some MESSAGE_UPDATEs with an embed", seen)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// BenchmarkMessageJSON renders a firehose MESSAGE_CREATE's d with encoding/json (the baseline) and with
// the hand-written appender.
func BenchmarkMessageJSON(b *testing.B) {
	m := guildMessage(Snowflake(1700000000000, 5), Snowflake(1600000000000, 7), Snowflake(1600000000000, 0), 12345678901234)
	m.Content = "firehose message evt-123456"
	m.Nonce = json.RawMessage(`"evt-123456"`)
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			_ = mustMarshal(m)
		}
	})
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendMessage(buf[:0], &m)
		}
	})
}

// BenchmarkFirehoseEvent makes firehose events as the firehose's goroutine does (without routing them)
// and the variant a session without MESSAGE_CONTENT receives, as its writer does.
func BenchmarkFirehoseEvent(b *testing.B) {
	s := New(Config{Guilds: 64})
	f := &firehose{g: s.gw, opts: FirehoseOptions{MessageCreate: 60, MessageUpdate: 15, MemberAdd: 5, TypingStart: 10,
		ReactionAdd: 10}, rnd: 42}
	sess := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuilds | IntentGuildMessages}
	n := 0
	for b.Loop() {
		n += len(f.next().payloadFor(sess))
	}
	b.ReportMetric(float64(n)/float64(b.N), "d-bytes/event")
}
