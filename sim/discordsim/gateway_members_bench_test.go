package discordsim

import "testing"

// BenchmarkMemberChunksOf100000 renders the 100 GUILD_MEMBERS_CHUNKs answering a request for every member
// of a 100,000-member guild: the simulator's own cost of such an answer.
func BenchmarkMemberChunksOf100000(b *testing.B) {
	gd := &Guild{ID: Snowflake(1600000000000, 0), MemberCount: 99999}
	tmpl := newMemberTemplate(gd, 0)
	bytes := 0
	for b.Loop() {
		bytes = 0
		for _, ch := range planMemberChunks(gd, 0, memberRequest{}) {
			bytes += len(ch.render(tmpl))
		}
	}
	b.ReportMetric(float64(bytes), "bytes/answer")
}
