package cache

import (
	"encoding/binary"
	"errors"
	"strings"

	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/store"
)

// Whether the cache holds a guild's whole member list. A GUILD_CREATE that lists every member
// (member_count of them) makes it complete; one that lists fewer (a large guild, or no GuildPresences
// intent) makes it incomplete, even if it was complete: the list may have changed while no session saw
// it. The GUILD_MEMBERS_CHUNKs of one request for every member that dd's gateway sent itself (a nonce
// beginning with MemberNoncePrefix; cache.request_members) complete it once every chunk_index of the
// request's chunk_count was applied. Chunks of a bot's own requests are applied but count for nothing:
// the cache cannot tell which members such a request asked for. GUILD_MEMBER_ADD and _REMOVE keep a
// complete list complete.

// MemberNoncePrefix begins the nonce of dd's own member requests (members.NoncePrefix).
const MemberNoncePrefix = "dd:"

// kindMemberList keys a guild's member-list state: c/g/<guild>L, no id, so that it goes with the guild.
// Its value is memberListComplete, or memberListPartial + the request's chunk_count (uvarint) + the
// nonce's length (a byte) + the nonce + a bit per chunk received. Absent: incomplete.
const (
	kindMemberList     byte = 'L'
	memberListComplete byte = 'c'
	memberListPartial  byte = 'p'
)

func memberListKey(g uint64) []byte { return append(guildKey(g), kindMemberList) }

// noteGuildCreateMembers records whether a GUILD_CREATE listed every member of its guild.
func (c *Cache) noteGuildCreateMembers(b *batch, g uint64, d, members []byte) error {
	count, _ := parseInt(rawjson.Field(d, "member_count"))
	listed := 0
	_ = eachElem(members, func([]byte) error { listed++; return nil })
	if listed >= count {
		return b.set(memberListKey(g), []byte{memberListComplete})
	}
	return b.del(memberListKey(g))
}

// noteChunk counts a chunk of dd's own request towards its guild's complete member list.
func (c *Cache) noteChunk(b *batch, g uint64, d []byte) error {
	nonce, _ := unquote(rawjson.Field(d, "nonce"))
	if !strings.HasPrefix(nonce, MemberNoncePrefix) || len(nonce) > 255 {
		return nil
	}
	index, ok1 := parseInt(rawjson.Field(d, "chunk_index"))
	count, ok2 := parseInt(rawjson.Field(d, "chunk_count"))
	if !ok1 || !ok2 || count < 1 || index < 0 || index >= count {
		return nil
	}
	k := memberListKey(g)
	old, err := b.get(k)
	if err != nil {
		return err
	}
	var bits []byte
	if len(old) > 0 && old[0] == memberListPartial {
		if n, w := binary.Uvarint(old[1:]); w > 0 && int(n) == count && len(old) > 1+w {
			nl := int(old[1+w])
			if rest := old[2+w:]; len(rest) == nl+(count+7)/8 && string(rest[:nl]) == nonce {
				bits = append([]byte(nil), rest[nl:]...)
			}
		}
	}
	if bits == nil {
		bits = make([]byte, (count+7)/8) // a new request: its chunks start the count afresh
	}
	bits[index/8] |= 1 << (index % 8)
	for i := range count {
		if bits[i/8]&(1<<(i%8)) == 0 {
			v := binary.AppendUvarint([]byte{memberListPartial}, uint64(count))
			v = append(append(append(v, byte(len(nonce))), nonce...), bits...)
			return b.set(k, v)
		}
	}
	return b.set(k, []byte{memberListComplete})
}

// MembersComplete reports whether the cache holds every member of a guild (see above); ErrNotFound
// when it does not hold the guild.
func (c *Cache) MembersComplete(g uint64) (bool, error) {
	complete := false
	err := c.viewGuild(g, func(r store.Reader) error {
		v, err := r.Get(memberListKey(g))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		complete = err == nil && len(v) == 1 && v[0] == memberListComplete
		return err
	})
	return complete, err
}

func parseInt(v []byte) (int, bool) {
	n := 0
	if len(v) == 0 || len(v) > 10 {
		return 0, false
	}
	for _, ch := range v {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + int(ch-'0')
	}
	return n, true
}
