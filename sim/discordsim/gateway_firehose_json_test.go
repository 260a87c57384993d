package discordsim

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// The objects of the firehose's other events, for fhReference.
type gwMemberAdd struct {
	simMember
	GuildID string `json:"guild_id"`
}

type gwTyping struct {
	ChannelID string    `json:"channel_id"`
	GuildID   string    `json:"guild_id"`
	UserID    string    `json:"user_id"`
	Timestamp int64     `json:"timestamp"`
	Member    simMember `json:"member"`
}

type gwReactionAdd struct {
	UserID          string    `json:"user_id"`
	ChannelID       string    `json:"channel_id"`
	MessageID       string    `json:"message_id"`
	GuildID         string    `json:"guild_id"`
	Member          simMember `json:"member"`
	Emoji           simEmoji  `json:"emoji"`
	MessageAuthorID string    `json:"message_author_id"`
	Burst           bool      `json:"burst"`
	BurstColors     []string  `json:"burst_colors"`
	Type            int       `json:"type"`
}

// fhReference builds the value whose encoding/json rendering an event's d must be, from the simulator's
// object types and constructors, as the firehose did before it wrote d itself; full is false for a
// session without MESSAGE_CONTENT.
func fhReference(t *testing.T, e *gwEvent, full bool) any {
	switch p := e.gen.(type) {
	case *fhMessage:
		m := guildMessage(p.id, p.channel, p.guild, p.author)
		m.Content = "firehose message " + eventKey(p.created)
		switch p.kind {
		case fhCreate:
			m.Nonce = json.RawMessage(`"` + eventKey(p.created) + `"`)
		case fhUnfurl:
			m.Embeds = []json.RawMessage{mustMarshal(simEmbed{Type: "link", URL: "https://example.com/" + eventKey(p.n),
				Title: "Example", Description: "unfurled link"})}
		case fhEdit:
			edited := discordTime(time.Unix(0, p.edited))
			m.EditedTimestamp = &edited
			m.Content += " (edited " + eventKey(p.n) + ")"
		}
		if !full {
			m.Content, m.Embeds = "", []json.RawMessage{}
		}
		return m
	case *fhMemberAdd:
		return gwMemberAdd{simMember: newMember(plainUser(p.user), discordTime(time.Unix(0, p.joined))), GuildID: FormatID(p.guild)}
	case *fhTyping:
		return gwTyping{ChannelID: FormatID(p.channel), GuildID: FormatID(p.guild), UserID: FormatID(p.user),
			Timestamp: p.at, Member: guildMember(&Guild{ID: p.guild}, plainUser(p.user))}
	case *fhReaction:
		return gwReactionAdd{UserID: FormatID(p.user), ChannelID: FormatID(p.channel), MessageID: FormatID(p.message),
			GuildID: FormatID(p.guild), Member: newMember(plainUser(p.user), snowflakeTimestamp(p.message)),
			Emoji: simEmoji{Name: "👍"}, MessageAuthorID: FormatID(p.author), BurstColors: []string{}}
	}
	t.Fatalf("%s: no firehose data", e.name)
	return nil
}

// The firehose's events are encoding/json's rendering of the simulator's objects, byte for byte, for
// sessions with and without MESSAGE_CONTENT (and the bot's own messages are not stripped); the stripped
// variant is what stripMessageJSON makes of the full one; the same event renders the same bytes again.
func TestFirehoseEventsJSON(t *testing.T) {
	s := New(Config{Guilds: 8})
	f := &firehose{g: s.gw, opts: FirehoseOptions{MessageCreate: 60, MessageUpdate: 15, MemberAdd: 5, TypingStart: 10,
		ReactionAdd: 10}, rnd: 9}
	full := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuildMessages | IntentMessageContent}
	strip := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuildMessages}
	seen := map[string]int{}
	for range 5000 {
		e := f.next()
		seen[e.name]++
		if p, ok := e.gen.(*fhMessage); ok {
			seen[e.name+" "+[]string{"create", "unfurl", "edit"}[p.kind]]++
		}
		for _, sess := range []*session{full, strip} {
			got := e.payloadFor(sess)
			want := mustMarshal(fhReference(t, e, sess == full || !e.stripContent))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s for intents %d:\n got %s\nwant %s", e.name, sess.intents, got, want)
			}
			if again := e.appendPayloadFor([]byte("x"), sess); !bytes.Equal(again[1:], got) {
				t.Fatalf("%s rendered again:\n%s\n%s", e.name, again[1:], got)
			}
		}
		if e.stripContent {
			if a, _ := stripMessageJSON(e.payloadFor(full)); !jsonEqual(a, e.payloadFor(strip)) {
				t.Fatalf("stripMessageJSON gives\n%s\nthe firehose\n%s", a, e.payloadFor(strip))
			}
			own := &fhMessage{}
			*own = *e.gen.(*fhMessage)
			bot := &session{g: s.gw, botID: own.author, intents: IntentGuildMessages}
			if got, want := own.appendFor(nil, bot), own.appendFor(nil, full); !bytes.Equal(got, want) {
				t.Fatalf("the bot's own message was stripped:\n%s\n%s", got, want)
			}
		}
	}
	if len(seen) != 8 {
		t.Errorf("event kinds %v, want 5, with creates, unfurls and edits", seen)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
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

// BenchmarkMessageJSON renders a firehose MESSAGE_CREATE's d with encoding/json (the baseline, as the
// firehose did) and as the firehose does now.
func BenchmarkMessageJSON(b *testing.B) {
	p := &fhMessage{kind: fhCreate, id: Snowflake(1700000000000, 5), channel: Snowflake(1600000000000, 7),
		guild: Snowflake(1600000000000, 0), author: 12345678901234, created: 123456, n: 123456}
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			m := guildMessage(p.id, p.channel, p.guild, p.author)
			m.Content = "firehose message " + eventKey(p.created)
			m.Nonce = json.RawMessage(`"` + eventKey(p.created) + `"`)
			_ = mustMarshal(m)
		}
	})
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = p.appendD(buf[:0], true)
		}
	})
}

// BenchmarkFirehoseEvent makes firehose events as the firehose's goroutine does (without routing them)
// and writes the d a session without MESSAGE_CONTENT receives, as its connection's writer does.
func BenchmarkFirehoseEvent(b *testing.B) {
	s := New(Config{Guilds: 64})
	f := &firehose{g: s.gw, opts: FirehoseOptions{MessageCreate: 60, MessageUpdate: 15, MemberAdd: 5, TypingStart: 10,
		ReactionAdd: 10}, rnd: 42}
	sess := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuilds | IntentGuildMessages}
	n := 0
	var buf []byte
	for b.Loop() {
		buf = f.next().appendPayloadFor(buf[:0], sess)
		n += len(buf)
	}
	b.ReportMetric(float64(n)/float64(b.N), "d-bytes/event")
}
