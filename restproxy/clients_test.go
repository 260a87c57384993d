package restproxy_test

// Real Discord libraries pointed at dd, with nothing changed but the URL: discordgo and disgo (test-only
// dependencies). The Node side (Discordeno, discord.js) is tests/node.

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/disgoorg/disgo/discord"
	"github.com/disgoorg/disgo/rest"
	"github.com/disgoorg/snowflake/v2"

	"github.com/ddhq/dd/sim/discordsim"
)

// pointDiscordgoAt reassigns every discordgo endpoint variable that addresses Discord's API to base
// (".../"), and restores them when the test ends. The endpoint functions read these at call time.
func pointDiscordgoAt(t *testing.T, base string) {
	vars := []*string{&discordgo.EndpointDiscord, &discordgo.EndpointAPI, &discordgo.EndpointGuilds,
		&discordgo.EndpointChannels, &discordgo.EndpointUsers, &discordgo.EndpointGateway, &discordgo.EndpointGatewayBot,
		&discordgo.EndpointWebhooks, &discordgo.EndpointStickers, &discordgo.EndpointStageInstances, &discordgo.EndpointSKUs,
		&discordgo.EndpointVoice, &discordgo.EndpointVoiceRegions, &discordgo.EndpointNitroStickersPacks,
		&discordgo.EndpointGuildCreate, &discordgo.EndpointApplications}
	saved := make([]string, len(vars))
	for i, v := range vars {
		saved[i] = *v
	}
	t.Cleanup(func() {
		for i, v := range vars {
			*v = saved[i]
		}
	})
	api := base + "api/v" + discordgo.APIVersion + "/"
	discordgo.EndpointDiscord = base
	discordgo.EndpointAPI = api
	discordgo.EndpointGuilds = api + "guilds/"
	discordgo.EndpointChannels = api + "channels/"
	discordgo.EndpointUsers = api + "users/"
	discordgo.EndpointGateway = api + "gateway"
	discordgo.EndpointGatewayBot = discordgo.EndpointGateway + "/bot"
	discordgo.EndpointWebhooks = api + "webhooks/"
	discordgo.EndpointStickers = api + "stickers/"
	discordgo.EndpointStageInstances = api + "stage-instances"
	discordgo.EndpointSKUs = api + "skus"
	discordgo.EndpointVoice = api + "/voice/"
	discordgo.EndpointVoiceRegions = discordgo.EndpointVoice + "regions"
	discordgo.EndpointNitroStickersPacks = api + "/sticker-packs"
	discordgo.EndpointGuildCreate = api + "guilds"
	discordgo.EndpointApplications = api + "applications"
}

// burst runs send(0) to send(n-1) at once, as a bot sends a burst over several channels, and fails the
// test with the first error.
func burst(t *testing.T, n int, send func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := send(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("burst: %v", err)
	}
}

func TestDiscordgoWorksThroughDD(t *testing.T) {
	e := newEnv(t, discordsim.Config{Guilds: 3, ChannelsPerGuild: 2}, nil)
	if err := e.sim.SetRouteLimit("POST /channels/{channel_id}/messages", 5, time.Second); err != nil {
		t.Fatal(err)
	}
	pointDiscordgoAt(t, e.dd.URL+"/")
	s, err := discordgo.New("Bot " + testToken)
	if err != nil {
		t.Fatal(err)
	}
	me, err := s.User("@me")
	if err != nil || me.ID != discordsim.FormatID(discordsim.BotUserID(0)) {
		t.Fatalf("User(@me): %v %+v", err, me)
	}
	ch := e.channel(0, 0)
	m, err := s.ChannelMessageSend(ch, "hello from discordgo")
	if err != nil || m.Content != "hello from discordgo" {
		t.Fatalf("send: %v %+v", err, m)
	}
	if m, err = s.ChannelMessageEdit(ch, m.ID, "edited"); err != nil || m.Content != "edited" || m.EditedTimestamp == nil {
		t.Fatalf("edit: %v %+v", err, m)
	}
	if err := s.MessageReactionAdd(ch, m.ID, "👍"); err != nil {
		t.Fatalf("reaction: %v", err)
	}
	up, err := s.ChannelMessageSendComplex(ch, &discordgo.MessageSend{Content: "a file",
		Files: []*discordgo.File{{Name: "report.txt", ContentType: "text/plain", Reader: strings.NewReader(strings.Repeat("line\n", 5000))}}})
	if err != nil || len(up.Attachments) != 1 || up.Attachments[0].Filename != "report.txt" || up.Attachments[0].Size != 25000 {
		t.Fatalf("upload: %v %+v", err, up)
	}

	// A burst over several channels, with reactions, as a bot would send it.
	burst(t, 30, func(i int) error {
		c := e.channel(i%3, i%2)
		msg, err := s.ChannelMessageSend(c, fmt.Sprintf("burst %d", i))
		if err != nil || i%5 != 0 {
			return err
		}
		return s.MessageReactionAdd(c, msg.ID, "✅")
	})
	e.noRateLimits(t)
}

func TestDisgoWorksThroughDD(t *testing.T) {
	e := newEnv(t, discordsim.Config{Guilds: 3, ChannelsPerGuild: 2}, nil)
	if err := e.sim.SetRouteLimit("POST /channels/{channel_id}/messages", 5, time.Second); err != nil {
		t.Fatal(err)
	}
	// disgo's own rate limiter is left out (dd keeps the limits; it also has a data race under concurrent
	// use in v0.18.15 that the race detector reports).
	r := rest.New(rest.NewClient(testToken, rest.WithURL(e.dd.URL+"/api/v10"), rest.WithRateLimiter(rest.NewNoopRateLimiter())))
	defer r.Close(t.Context())
	ch := snowflake.MustParse(e.channel(1, 0))
	m, err := r.CreateMessage(ch, discord.NewMessageCreateBuilder().SetContent("hello from disgo").Build())
	if err != nil || m.Content != "hello from disgo" {
		t.Fatalf("create: %v %+v", err, m)
	}
	if m, err = r.UpdateMessage(ch, m.ID, discord.NewMessageUpdateBuilder().SetContent("edited").Build()); err != nil || m.Content != "edited" {
		t.Fatalf("update: %v %+v", err, m)
	}
	if err := r.AddReaction(ch, m.ID, "👍"); err != nil {
		t.Fatalf("reaction: %v", err)
	}
	data := bytes.Repeat([]byte{0, 1, 2, 3, 0xff}, 300000) // 1.5 MB: spooled by dd
	up, err := r.CreateMessage(ch, discord.NewMessageCreateBuilder().SetContent("a file").
		AddFile("blob.bin", "", bytes.NewReader(data)).Build())
	if err != nil || len(up.Attachments) != 1 || up.Attachments[0].Size != len(data) {
		t.Fatalf("upload: %v %+v", err, up)
	}

	burst(t, 30, func(i int) error {
		c := snowflake.MustParse(e.channel(i%3, i%2))
		msg, err := r.CreateMessage(c, discord.NewMessageCreateBuilder().SetContentf("burst %d", i).Build())
		if err != nil || i%5 != 0 {
			return err
		}
		return r.AddReaction(c, msg.ID, "✅")
	})
	e.noRateLimits(t)
}
