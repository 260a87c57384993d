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
