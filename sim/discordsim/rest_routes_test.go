package discordsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// multipartBody builds a message upload: payload_json plus files[n] of the given sizes.
func multipartBody(t *testing.T, payloadJSON string, sizes ...int) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="payload_json"`)
	h.Set("Content-Type", "application/json")
	pw, _ := mw.CreatePart(h)
	_, _ = pw.Write([]byte(payloadJSON))
	for i, n := range sizes {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="files[%d]"; filename="f%d.bin"`, i, i))
		h.Set("Content-Type", "application/octet-stream")
		fw, _ := mw.CreatePart(h)
		_, _ = fw.Write(bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func TestMultipartUploadIsParsedWithFilesAndPayloadJSON(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	ct, body := multipartBody(t, `{"content":"with files","attachments":[{"id":0},{"id":1}]}`, 1000, 70000)
	req, _ := http.NewRequest("POST", s.APIURL()+"/v10/channels/"+ch+"/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bot sim-token")
	req.Header.Set("User-Agent", testUA)
	req.Header.Set("Content-Type", ct)
	var m struct {
		ID          string
		ChannelID   string `json:"channel_id"`
		Content     string
		Attachments []struct {
			ID, Filename string
			Size         int64
			URL          string
		}
	}
	send(t, req).want(t, 200).json(t, &m)
	if m.Content != "with files" || m.ChannelID != ch || len(m.Attachments) != 2 ||
		m.Attachments[0].Filename != "f0.bin" || m.Attachments[0].Size != 1000 || m.Attachments[1].Size != 70000 ||
		m.Attachments[1].URL == "" || m.Attachments[0].ID == m.Attachments[1].ID {
		t.Fatalf("message %+v, want content and two attachments of 1000 and 70000 bytes", m)
	}
	sum := sha256.Sum256(body)
	if rec := s.RESTRequests()[0]; rec.BodySHA256 != hex.EncodeToString(sum[:]) || rec.BodySize != int64(len(body)) {
		t.Fatalf("logged body %d bytes %s, want %d bytes %x", rec.BodySize, rec.BodySHA256, len(body), sum)
	}
}

func TestBodyOverTheUploadLimitGets413(t *testing.T) {
	s := startREST(t, Config{})
	s.SetUploadLimit(4096)
	ch := channelOf(s, 0, 0)
	big := `{"content":"` + strings.Repeat("x", 5000) + `"}`
	r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", big).want(t, 413)
	if r.code(t) != 40005 || !bytes.Contains(r.body, []byte("Request entity too large")) {
		t.Fatalf("413 body %s, want code 40005", r.body)
	}
	// Without a Content-Length the limit applies while streaming.
	ct, body := multipartBody(t, `{"content":"x"}`, 8000)
	req, _ := http.NewRequest("POST", s.APIURL()+"/v10/channels/"+ch+"/messages", io.MultiReader(bytes.NewReader(body)))
	req.Header.Set("Authorization", "Bot sim-token")
	req.Header.Set("User-Agent", testUA)
	req.Header.Set("Content-Type", ct)
	if r := send(t, req).want(t, 413); r.code(t) != 40005 {
		t.Fatalf("streamed upload over the limit: %s, want code 40005", r.body)
	}
	ct, body = multipartBody(t, `{"content":"x"}`, 3000)
	req, _ = http.NewRequest("POST", s.APIURL()+"/v10/channels/"+ch+"/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bot sim-token")
	req.Header.Set("User-Agent", testUA)
	req.Header.Set("Content-Type", ct)
	send(t, req).want(t, 200)
	if st := s.RESTStats(); st.TooLarge != 2 {
		t.Fatalf("stats: %d too large, want 2", st.TooLarge)
	}
}

func TestMalformedJSONGets50109(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	for _, route := range [][2]string{
		{"POST", "/api/v10/channels/" + ch + "/messages"},
		{"PATCH", "/api/v10/channels/" + ch},
		{"PATCH", "/api/v10/guilds/" + guildOf(s, 0) + "/members/" + FormatID(MemberUserID(s.Guilds()[0].ID, 0))},
		{"POST", "/api/v10/users/@me/channels"},
	} {
		r := call(t, s, route[0], route[1], `{"content": "x`).want(t, 400)
		if r.code(t) != 50109 || !bytes.Contains(r.body, []byte("The request body contains invalid JSON.")) {
			t.Fatalf("%s %s with broken JSON: %s, want 50109", route[0], route[1], r.body)
		}
	}
	if r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{"content": 5}`).want(t, 400); r.code(t) != 50035 {
		t.Fatalf("content of the wrong type: %s, want 50035", r.body)
	}
	if r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{}`).want(t, 400); r.code(t) != 50006 {
		t.Fatalf("empty message: %s, want 50006", r.body)
	}
}

func TestJSONBodyNeedsItsContentType(t *testing.T) {
	s := startREST(t, Config{})
	path := "/api/v10/channels/" + channelOf(s, 0, 0) + "/messages"
	for _, ct := range []string{"", "text/plain"} {
		r := call(t, s, "POST", path, `{"content":"x"}`, "Content-Type", ct).want(t, 400)
		if r.code(t) != 50006 {
			t.Fatalf("JSON sent as %q: %s, want 50006 (Discord ignores the body)", ct, r.body)
		}
	}
	var m struct{ Content string }
	call(t, s, "POST", path, `{"content":"x"}`, "Content-Type", "application/json; charset=utf-8").want(t, 200).json(t, &m)
	call(t, s, "POST", path, "content=from+a+form", "Content-Type", "application/x-www-form-urlencoded").want(t, 200).json(t, &m)
	if m.Content != "from a form" {
		t.Fatalf("form-encoded message content %q, want %q", m.Content, "from a form")
	}
}

func TestNoContentRoutesAnswer204WithoutBody(t *testing.T) {
	s := startREST(t, Config{})
	g := s.Guilds()[0]
	ch := channelOf(s, 0, 0)
	msg := FormatID(Snowflake(time.Now().UnixMilli()-60_000, 1))
	user := FormatID(MemberUserID(g.ID, 2))
	for _, c := range [][2]string{
		{"POST", "/api/v10/channels/" + ch + "/typing"},
		{"PUT", "/api/v10/channels/" + ch + "/messages/" + msg + "/reactions/%E2%9C%85/@me"},
		{"DELETE", "/api/v10/channels/" + ch + "/messages/" + msg},
		{"PUT", "/api/v10/guilds/" + FormatID(g.ID) + "/members/" + user + "/roles/" + FormatID(g.RoleIDs[1])},
		{"DELETE", "/api/v10/guilds/" + FormatID(g.ID) + "/members/" + user + "/roles/" + FormatID(g.RoleIDs[1])},
	} {
		r := call(t, s, c[0], c[1], "", "X-Audit-Log-Reason", "test").want(t, 204)
		if len(r.body) != 0 {
			t.Fatalf("%s %s: 204 with body %q", c[0], c[1], r.body)
		}
	}
	r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages/bulk-delete",
		fmt.Sprintf(`{"messages":[%q,%q]}`, msg, FormatID(Snowflake(time.Now().UnixMilli()-1000, 2)))).want(t, 204)
	if len(r.body) != 0 {
		t.Fatalf("bulk delete: 204 with body %q", r.body)
	}
	if rec := s.RESTRequests()[0]; rec.AuditLogReason != "test" {
		t.Fatalf("audit log reason recorded %q, want %q", rec.AuditLogReason, "test")
	}
}

func TestUnknownResourcesAre404WithDiscordCodes(t *testing.T) {
	s := startREST(t, Config{})
	g := s.Guilds()[0]
	ch := channelOf(s, 0, 0)
	future := FormatID(Snowflake(time.Now().UnixMilli()+3600_000, 1))
	for _, c := range []struct {
		method, path string
		status, code int
	}{
		{"GET", "/api/v10/channels/999", 404, 10003},
		{"POST", "/api/v10/channels/999/messages", 404, 10003},
		{"GET", "/api/v10/guilds/999", 404, 10004},
		{"GET", "/api/v10/channels/" + ch + "/messages/" + future, 404, 10008},
		{"GET", "/api/v10/guilds/" + FormatID(g.ID) + "/members/" + FormatID(MemberUserID(g.ID, g.MemberCount)), 404, 10007},
		{"PUT", "/api/v10/guilds/" + FormatID(g.ID) + "/members/" + FormatID(MemberUserID(g.ID, 0)) + "/roles/12345", 404, 10011},
		{"POST", "/api/v10/webhooks/12345/nope", 404, 10015},
		{"GET", "/api/v10/channels/abc", 400, 50035},
	} {
		if r := call(t, s, c.method, c.path, `{"content":"x"}`).want(t, c.status); r.code(t) != c.code {
			t.Fatalf("%s %s: %s, want code %d", c.method, c.path, r.body, c.code)
		}
	}
	if st := s.RESTStats(); st.UnknownWebhook != 1 {
		t.Fatalf("stats: %d unknown webhooks, want 1", st.UnknownWebhook)
	}
}

func TestGuildAndMemberRoutesServeTheWorld(t *testing.T) {
	s := startREST(t, Config{MembersPerGuild: 7, PrivilegedIntents: gatewayIntentGuildMembers})
	g := s.Guilds()[1]
	var guild struct {
		ID                     string
		Roles                  []struct{ ID string }
		ApproximateMemberCount int `json:"approximate_member_count"`
	}
	call(t, s, "GET", "/api/v10/guilds/"+FormatID(g.ID)+"?with_counts=true", "").want(t, 200).json(t, &guild)
	if guild.ID != FormatID(g.ID) || len(guild.Roles) != len(g.RoleIDs) || guild.ApproximateMemberCount != 7 {
		t.Fatalf("guild %+v, want %d with its roles and 7 members", guild, g.ID)
	}
	var chans []struct{ ID, GuildID string }
	call(t, s, "GET", "/api/v10/guilds/"+FormatID(g.ID)+"/channels", "").want(t, 200).json(t, &chans)
	if len(chans) != len(g.Channels) || chans[0].ID != FormatID(g.Channels[0]) {
		t.Fatalf("channels %+v, want %v", chans, g.Channels)
	}
	var members []struct{ User struct{ ID string } }
	call(t, s, "GET", "/api/v10/guilds/"+FormatID(g.ID)+"/members?limit=3&after="+FormatID(MemberUserID(g.ID, 2)), "").
		want(t, 200).json(t, &members)
	if len(members) != 3 || members[0].User.ID != FormatID(MemberUserID(g.ID, 3)) || members[2].User.ID != FormatID(MemberUserID(g.ID, 5)) {
		t.Fatalf("members after #2, limit 3: %+v, want #3..#5", members)
	}
	call(t, s, "GET", "/api/v10/guilds/"+FormatID(g.ID)+"/members?limit=1001", "").want(t, 400)
	noIntent := startREST(t, Config{})
	if r := call(t, noIntent, "GET", "/api/v10/guilds/"+guildOf(noIntent, 0)+"/members", "").want(t, 403); r.code(t) != 50001 {
		t.Fatalf("list members without the GUILD_MEMBERS intent: %s, want 403 50001", r.body)
	}
	call(t, s, "GET", "/api/v10/guilds/"+FormatID(g.ID)+"/members/"+FormatID(BotUserID(0)), "").want(t, 200)
	var dm struct {
		ID   string
		Type int
	}
	call(t, s, "POST", "/api/v10/users/@me/channels", `{"recipient_id":"`+FormatID(MemberUserID(g.ID, 1))+`"}`).want(t, 200).json(t, &dm)
	if dm.Type != 1 {
		t.Fatalf("DM channel %+v, want type 1", dm)
	}
	call(t, s, "POST", "/api/v10/channels/"+dm.ID+"/messages", `{"content":"hi"}`).want(t, 200)
}

func TestMessageHistoryIsNewestFirstAndHonoursItsBounds(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	after := Snowflake(time.Now().UnixMilli()-60_000, 0)
	var msgs []struct{ ID string }
	call(t, s, "GET", "/api/v10/channels/"+ch+"/messages?limit=3&after="+FormatID(after), "").want(t, 200).json(t, &msgs)
	if len(msgs) != 3 || msgs[0].ID != FormatID(after+3<<22) || msgs[2].ID != FormatID(after+1<<22) {
		t.Fatalf("3 messages after %d: %+v, want the next three, newest first", after, msgs)
	}
	call(t, s, "GET", "/api/v10/channels/"+ch+"/messages", "").want(t, 200).json(t, &msgs)
	if len(msgs) != 50 {
		t.Fatalf("default history: %d messages, want 50", len(msgs))
	}
	call(t, s, "GET", "/api/v10/channels/"+ch+"/messages?limit=101", "").want(t, 400)
}

func TestWebhooksWithATokenNeedNoBotAuth(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	var hook struct{ ID, Token, URL string }
	call(t, s, "POST", "/api/v10/channels/"+ch+"/webhooks", `{"name":"hook"}`).want(t, 200).json(t, &hook)
	if hook.Token == "" || hook.URL != s.APIURL()+"/webhooks/"+hook.ID+"/"+hook.Token {
		t.Fatalf("webhook %+v, want a token and its URL", hook)
	}
	path := "/api/v10/webhooks/" + hook.ID + "/" + hook.Token
	call(t, s, "POST", path, `{"content":"x"}`, "Authorization", "").want(t, 204)
	var m struct {
		WebhookID string `json:"webhook_id"`
		ChannelID string `json:"channel_id"`
	}
	call(t, s, "POST", path+"?wait=true", `{"content":"x"}`, "Authorization", "").want(t, 200).json(t, &m)
	if m.ChannelID != ch {
		t.Fatalf("webhook message %+v, want channel %s", m, ch)
	}
	if r := call(t, s, "POST", "/api/v10/webhooks/"+hook.ID+"/wrong", `{"content":"x"}`, "Authorization", "").want(t, 401); r.code(t) != 50027 {
		t.Fatalf("wrong webhook token: %s, want 50027", r.body)
	}
	call(t, s, "PATCH", path+"/messages/@original", `{"content":"y"}`, "Authorization", "").want(t, 200)
	call(t, s, "DELETE", path, "", "Authorization", "").want(t, 204)
	call(t, s, "POST", path, `{"content":"x"}`, "Authorization", "").want(t, 404)
	// Interaction follow-ups use the application's ID and the interaction token.
	call(t, s, "POST", "/api/v10/webhooks/"+FormatID(BotUserID(0))+"/interaction-token", `{"content":"x"}`, "Authorization", "").want(t, 204)
}

func TestInteractionCallbackAnswersOnceWithinThreeSeconds(t *testing.T) {
	s := startREST(t, Config{})
	id := FormatID(Snowflake(time.Now().UnixMilli(), 7))
	path := "/api/v10/interactions/" + id + "/tok/callback"
	call(t, s, "POST", path, `{"type":4,"data":{"content":"hi"}}`, "Authorization", "").want(t, 204)
	if r := call(t, s, "POST", path, `{"type":4,"data":{"content":"hi"}}`, "Authorization", "").want(t, 400); r.code(t) != 40060 {
		t.Fatalf("second callback: %s, want 40060", r.body)
	}
	stale := FormatID(Snowflake(time.Now().UnixMilli()-4000, 7))
	if r := call(t, s, "POST", "/api/v10/interactions/"+stale+"/tok/callback", `{"type":5}`, "Authorization", "").want(t, 404); r.code(t) != 10062 {
		t.Fatalf("callback after 4s: %s, want 10062", r.body)
	}
	fresh := FormatID(Snowflake(time.Now().UnixMilli(), 8))
	var res struct {
		Resource struct {
			Type    int
			Message struct{ Content string }
		}
	}
	call(t, s, "POST", "/api/v10/interactions/"+fresh+"/tok/callback?with_response=true", `{"type":4,"data":{"content":"hi"}}`, "Authorization", "").
		want(t, 200).json(t, &res)
	if res.Resource.Type != 4 || res.Resource.Message.Content != "hi" {
		t.Fatalf("with_response: %+v, want the message", res)
	}
}

func TestApplicationCommandsAreStoredPerBot(t *testing.T) {
	s := startREST(t, Config{})
	app := FormatID(BotUserID(0))
	var cmds []struct {
		ID, Name      string
		ApplicationID string `json:"application_id"`
	}
	call(t, s, "PUT", "/api/v10/applications/"+app+"/commands", `[{"name":"ping","description":"Ping"}]`).want(t, 200).json(t, &cmds)
	if len(cmds) != 1 || cmds[0].ID == "" || cmds[0].ApplicationID != app {
		t.Fatalf("overwrite: %+v", cmds)
	}
	first := cmds[0].ID
	call(t, s, "GET", "/api/v10/applications/"+app+"/commands", "").want(t, 200).json(t, &cmds)
	if len(cmds) != 1 || cmds[0].ID != first {
		t.Fatalf("get after overwrite: %+v, want the ping command %s", cmds, first)
	}
	call(t, s, "PUT", "/api/v10/applications/"+app+"/commands", `[{"name":"","description":"x"}]`).want(t, 400)
	if r := call(t, s, "GET", "/api/v10/applications/12345/commands", "").want(t, 403); r.code(t) != 50001 {
		t.Fatalf("another application's commands: %s, want 50001", r.body)
	}
}

func BenchmarkRESTMessageCreate(b *testing.B) {
	s := New(Config{Guilds: 50})
	if err := s.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_ = s.SetRouteLimit("message-create", 1<<30, time.Second)
	s.rest.limiters[0] = newRESTLimiter(1 << 20)
	var chans []string
	for _, g := range s.Guilds() {
		for _, c := range g.Channels {
			chans = append(chans, FormatID(c))
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	body := []byte(`{"content":"benchmark message"}`)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			req, _ := http.NewRequest("POST", s.APIURL()+"/v10/channels/"+chans[i%len(chans)]+"/messages", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bot sim-token")
			req.Header.Set("User-Agent", testUA)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
