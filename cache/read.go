package cache

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ddhq/dd/store"
)

// Reads return Discord-shaped JSON, as Discord's REST API would return the object: ids as strings, a
// member with its user nested, a channel with its guild_id. Fields the cache does not keep are absent.

// MaxMembersPage is the most members one GuildMembers call returns (Discord's limit for the same list).
const MaxMembersPage = 1000

// appendObject appends a stored object with its id added back: {"<idName>":"<id>",<stored fields>}.
func appendObject(dst []byte, idName string, id uint64, v []byte) []byte {
	dst = append(dst, `{"`...)
	dst = append(dst, idName...)
	dst = append(dst, `":`...)
	dst = appendID(dst, id)
	return appendRest(dst, v)
}

// appendRest appends the stored object's fields after fields already written, and closes the object.
func appendRest(dst, v []byte) []byte {
	if len(v) > 2 {
		dst = append(dst, ',')
		dst = append(dst, v[1:]...)
		return dst
	}
	return append(dst, '}')
}

func (c *Cache) view(fn func(r store.Reader) error) error {
	err := c.st.View(fn)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// Guild returns a guild with its roles, emojis and stickers (as Discord's GET /guilds/{id} does), and
// "unavailable": true while it is in an outage.
func (c *Cache) Guild(id uint64) ([]byte, error) {
	var out []byte
	err := c.view(func(r store.Reader) error {
		v, err := r.Get(guildKey(id))
		if err != nil {
			return err
		}
		out = appendObject(make([]byte, 0, 512), "id", id, v[1:])
		out = out[:len(out)-1]
		if v[0] == stateUnavailable {
			out = append(out, `,"unavailable":true`...)
		}
		for _, l := range []struct {
			name string
			kind byte
		}{{"roles", kindRole}, {"emojis", kindEmoji}, {"stickers", kindSticker}} {
			out = append(out, `,"`...)
			out = append(out, l.name...)
			out = append(out, `":`...)
			if out, err = appendKind(out, r, id, l.kind, "id", ""); err != nil {
				return err
			}
		}
		out = append(out, '}')
		return nil
	})
	return out, err
}

// appendKind appends a JSON array of a guild's objects of one kind; guildField, when set, names the
// field that gets the guild's id.
func appendKind(dst []byte, r store.Reader, g uint64, kind byte, idName, guildField string) ([]byte, error) {
	return appendSubs(dst, r, g, kind, nil, 0, func(dst []byte, id uint64, v []byte) ([]byte, error) {
		return appendSub(dst, g, id, v, idName, guildField), nil
	})
}

// appendSubs appends a JSON array of a guild's objects of one kind, from the key from on (nil: all) and
// at most limit of them (0: all), each appended by add.
func appendSubs(dst []byte, r store.Reader, g uint64, kind byte, from []byte, limit int,
	add func(dst []byte, id uint64, v []byte) ([]byte, error)) ([]byte, error) {
	dst = append(dst, '[')
	n := 0
	var aerr error
	err := r.Scan(kindPrefix(g, kind), from, false, func(k, v []byte) error {
		if len(k) != subKeyLen {
			return nil
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		if dst, aerr = add(dst, keyID(k), v); aerr != nil {
			return aerr
		}
		if n == limit {
			return store.ErrStopScan
		}
		return nil
	})
	return append(dst, ']'), err
}

func appendSub(dst []byte, g, id uint64, v []byte, idName, guildField string) []byte {
	dst = appendObject(dst, idName, id, v)
	if guildField == "" {
		return dst
	}
	dst = append(dst[:len(dst)-1], `,"`...)
	dst = append(dst, guildField...)
	dst = append(dst, `":`...)
	dst = appendID(dst, g)
	return append(dst, '}')
}

// viewGuild runs fn in a read of the store that holds guild g; ErrNotFound when the cache does not hold it.
func (c *Cache) viewGuild(g uint64, fn func(r store.Reader) error) error {
	return c.view(func(r store.Reader) error {
		if has, err := r.Has(guildKey(g)); err != nil || !has {
			if err == nil {
				err = ErrNotFound
			}
			return err
		}
		return fn(r)
	})
}

// guildList returns a JSON array of a guild's objects of one kind, ErrNotFound for an unknown guild.
func (c *Cache) guildList(g uint64, kind byte, idName, guildField string) ([]byte, error) {
	var out []byte
	err := c.viewGuild(g, func(r store.Reader) error {
		var err error
		out, err = appendKind(make([]byte, 0, 1024), r, g, kind, idName, guildField)
		return err
	})
	return out, err
}

// GuildChannels returns a guild's channels, without threads (as Discord's GET /guilds/{id}/channels).
func (c *Cache) GuildChannels(g uint64) ([]byte, error) {
	return c.guildList(g, kindChannel, "id", "guild_id")
}

// GuildThreads returns the guild's active threads the cache holds.
func (c *Cache) GuildThreads(g uint64) ([]byte, error) {
	return c.guildList(g, kindThread, "id", "guild_id")
}

// GuildRoles returns a guild's roles.
func (c *Cache) GuildRoles(g uint64) ([]byte, error) { return c.guildList(g, kindRole, "id", "") }

// GuildEmojis returns a guild's custom emojis.
func (c *Cache) GuildEmojis(g uint64) ([]byte, error) { return c.guildList(g, kindEmoji, "id", "") }

// GuildStickers returns a guild's stickers.
func (c *Cache) GuildStickers(g uint64) ([]byte, error) {
	return c.guildList(g, kindSticker, "id", "")
}

// GuildMembers returns up to limit (1..MaxMembersPage) of a guild's members in user id order, starting
// after the user id after (0 for the first page), as Discord's GET /guilds/{id}/members pages.
func (c *Cache) GuildMembers(g, after uint64, limit int) ([]byte, error) {
	if limit < 1 || limit > MaxMembersPage {
		return nil, fmt.Errorf("cache: limit %d is not between 1 and %d", limit, MaxMembersPage)
	}
	var out []byte
	err := c.viewGuild(g, func(r store.Reader) error {
		out = make([]byte, 0, 256*min(limit, 100))
		if after == 1<<64-1 {
			out = append(out, "[]"...) // nobody comes after the largest id
			return nil
		}
		var err error
		out, err = appendSubs(out, r, g, kindMember, subKey(g, kindMember, after+1), limit,
			func(dst []byte, id uint64, v []byte) ([]byte, error) { return appendMember(dst, r, id, v) })
		return err
	})
	return out, err
}

// appendMember appends a member with its user nested.
func appendMember(dst []byte, r store.Reader, uid uint64, v []byte) ([]byte, error) {
	dst = append(dst, `{"user":`...)
	u, err := r.Get(userKey(uid))
	switch {
	case errors.Is(err, store.ErrNotFound):
		u = []byte("{}")
	case err != nil:
		return dst, err
	}
	dst = appendObject(dst, "id", uid, u)
	return appendRest(dst, v), nil
}

// Member returns one member of a guild, its user nested.
func (c *Cache) Member(g, user uint64) ([]byte, error) {
	var out []byte
	err := c.view(func(r store.Reader) error {
		v, err := r.Get(subKey(g, kindMember, user))
		if err != nil {
			return err
		}
		out, err = appendMember(make([]byte, 0, 256), r, user, v)
		return err
	})
	return out, err
}

// Channel returns a channel or thread, with its guild_id when it is in a guild.
func (c *Cache) Channel(id uint64) ([]byte, error) {
	var out []byte
	err := c.view(func(r store.Reader) error {
		ref, err := r.Get(channelKey(id))
		if err != nil {
			return err
		}
		if len(ref) != 9 {
			return fmt.Errorf("cache: channel %d: bad index entry", id)
		}
		g := binary.BigEndian.Uint64(ref)
		v, err := r.Get(subKey(g, ref[8], id))
		if err != nil {
			return err
		}
		guildField := "guild_id"
		if g == 0 {
			guildField = ""
		}
		out = appendSub(make([]byte, 0, 256), g, id, v, "id", guildField)
		return nil
	})
	return out, err
}

// User returns a user.
func (c *Cache) User(id uint64) ([]byte, error) {
	return c.one(userKey(id), func(dst, v []byte) []byte { return appendObject(dst, "id", id, v) })
}

// VoiceState returns a member's voice state while it is in a voice channel.
func (c *Cache) VoiceState(g, user uint64) ([]byte, error) {
	return c.one(subKey(g, kindVoiceState, user), func(dst, v []byte) []byte {
		dst = append(dst, `{"guild_id":`...)
		dst = appendID(dst, g)
		dst = append(dst, `,"user_id":`...)
		dst = appendID(dst, user)
		return appendRest(dst, v)
	})
}

// Presence returns a member's presence (kept only with Options.Presences).
func (c *Cache) Presence(g, user uint64) ([]byte, error) {
	return c.one(subKey(g, kindPresence, user), func(dst, v []byte) []byte {
		dst = append(dst, `{"user":{"id":`...)
		dst = appendID(dst, user)
		dst = append(dst, `},"guild_id":`...)
		dst = appendID(dst, g)
		return appendRest(dst, v)
	})
}

// Message returns a message of a channel (kept only with Options.MessagesPerChannel).
func (c *Cache) Message(channel, id uint64) ([]byte, error) {
	var out []byte
	err := c.view(func(r store.Reader) error {
		var g uint64 // a channel the cache does not know: a direct message, kept under guild 0
		if ref, err := r.Get(channelKey(channel)); err == nil && len(ref) == 9 {
			g = binary.BigEndian.Uint64(ref)
		}
		v, err := r.Get(messageKey(g, channel, id))
		if err != nil {
			return err
		}
		out = appendObject(make([]byte, 0, 512), "id", id, v)
		out = append(out[:len(out)-1], `,"channel_id":`...)
		out = appendID(out, channel)
		if g != 0 {
			out = append(out, `,"guild_id":`...)
			out = appendID(out, g)
		}
		out = append(out, '}')
		return nil
	})
	return out, err
}

func (c *Cache) one(k []byte, render func(dst, v []byte) []byte) ([]byte, error) {
	var out []byte
	err := c.view(func(r store.Reader) error {
		v, err := r.Get(k)
		if err != nil {
			return err
		}
		out = render(make([]byte, 0, 256), v)
		return nil
	})
	return out, err
}
