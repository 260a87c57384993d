package discord

import "testing"

func TestParseIntentsAcceptsBothSpellingsAndIntegers(t *testing.T) {
	cases := []struct {
		in   []string
		want int
	}{
		{[]string{"Guilds", "GuildMessages"}, 1 | 1<<9},
		{[]string{"GUILDS", "GUILD_MESSAGES", "MESSAGE_CONTENT"}, 1 | 1<<9 | 1<<15},
		{[]string{"513"}, 513},
		{[]string{"GuildBans"}, 1 << 2},
		{nil, 0},
	}
	for _, c := range cases {
		got, err := ParseIntents(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseIntents(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseIntentsRejectsUnknown(t *testing.T) {
	for _, in := range [][]string{{"Guild"}, {"Guilds", "Nope"}, {"-1"}, {"1073741824"}} {
		if _, err := ParseIntents(in); err == nil {
			t.Errorf("ParseIntents(%q) accepted; want an error", in)
		}
	}
}

func TestNamesCoverEveryBit(t *testing.T) {
	for _, n := range IntentNames() {
		if _, err := ParseIntent(n); err != nil {
			t.Errorf("canonical name %q does not parse: %v", n, err)
		}
	}
}

// One table decides what a client does after every close, Discord's codes and the websocket's own.
func TestCloseCodeTableSaysWhatToDo(t *testing.T) {
	for code, want := range map[int]CloseAction{
		1000: CloseNewSession, 1001: CloseNewSession, // the session was ended
		1006: CloseResume, 3000: CloseResume, 4000: CloseResume, 4008: CloseResume,
		4007: CloseNewSession, 4009: CloseNewSession,
		4004: CloseFatal, 4010: CloseFatal, 4011: CloseFatal, 4012: CloseFatal, 4013: CloseFatal, 4014: CloseFatal,
	} {
		if got := LookupCloseCode(code); got.Action != want {
			t.Errorf("close %d (%s): action %d, want %d", code, got.Name, got.Action, want)
		}
		if got := LookupCloseCode(code); got.Action == CloseFatal && got.Hint == "" {
			t.Errorf("close %d is fatal without a hint for the operator", code)
		}
	}
}
