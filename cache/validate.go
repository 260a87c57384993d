package cache

import (
	"errors"
	"fmt"
)

// An event is applied whole or not at all. A handler reads an event as it writes it, so one that found
// "channels": 5 halfway through a GUILD_CREATE used to leave the guild stored and its lists not; now
// every event is checked first, against the shape of what its handler will read, and only then applied.
// The check covers what the cache reads: the ids it keys objects by (snowflakes: decimal, non-zero,
// within 64 bits), the objects and arrays that hold them, and the JSON structure of every level it
// walks. The fields it copies as they are (a channel's topic, a role's tags) are not its business.

// shape is what an object must hold for its handler to read all of it.
type shape struct {
	ids       []string          // snowflakes that must be present
	optIDs    []string          // snowflakes that may be absent or null
	objs      map[string]*shape // objects that must be present and not null
	optObjs   map[string]*shape // objects that may be absent or null
	lists     map[string]*shape // arrays of objects that may be absent or null
	needLists []string          // of lists, those that must be present (null counts as empty)
	idLists   []string          // arrays of snowflakes that may be absent or null

	rules         map[string]rule // by compile
	nRequired     int
	requiredNames []string
}

// eventShapes are the shapes of the events the cache applies, for a cache with options o (presences are
// read only when kept).
func eventShapes(o Options) map[string]*shape {
	withID := &shape{ids: []string{"id"}}
	withUser := &shape{objs: map[string]*shape{"user": withID}}
	guild := &shape{ids: []string{"id"}, lists: map[string]*shape{
		"channels": withID, "threads": withID, "roles": withID, "emojis": withID, "stickers": withID,
		"voice_states": {ids: []string{"user_id"}, optObjs: map[string]*shape{"member": withUser}},
		"members":      withUser,
	}}
	if o.Presences {
		guild.lists["presences"] = withUser
	}
	guildUpdate := &shape{ids: []string{"id"}, lists: map[string]*shape{"roles": withID, "emojis": withID, "stickers": withID}}
	channel := &shape{ids: []string{"id"}, optIDs: []string{"guild_id", "parent_id"}}
	chunk := &shape{ids: []string{"guild_id"}, lists: map[string]*shape{"members": withUser}}
	if o.Presences {
		chunk.lists["presences"] = withUser
	}
	message := &shape{ids: []string{"id", "channel_id"}, optIDs: []string{"guild_id"},
		optObjs: map[string]*shape{"author": withID}}
	shapes := map[string]*shape{
		"READY":                 {optObjs: map[string]*shape{"user": withID}, lists: map[string]*shape{"guilds": withID}},
		"GUILD_CREATE":          guild,
		"GUILD_UPDATE":          guildUpdate,
		"GUILD_DELETE":          {ids: []string{"id"}},
		"CHANNEL_CREATE":        channel,
		"CHANNEL_UPDATE":        channel,
		"CHANNEL_DELETE":        channel,
		"THREAD_CREATE":         channel,
		"THREAD_UPDATE":         channel,
		"THREAD_DELETE":         channel,
		"THREAD_LIST_SYNC":      {ids: []string{"guild_id"}, idLists: []string{"channel_ids"}, lists: map[string]*shape{"threads": channel}},
		"GUILD_ROLE_CREATE":     {ids: []string{"guild_id"}, objs: map[string]*shape{"role": withID}},
		"GUILD_ROLE_UPDATE":     {ids: []string{"guild_id"}, objs: map[string]*shape{"role": withID}},
		"GUILD_ROLE_DELETE":     {ids: []string{"guild_id", "role_id"}},
		"GUILD_MEMBER_ADD":      {ids: []string{"guild_id"}, objs: map[string]*shape{"user": withID}},
		"GUILD_MEMBER_UPDATE":   {ids: []string{"guild_id"}, objs: map[string]*shape{"user": withID}},
		"GUILD_MEMBER_REMOVE":   {ids: []string{"guild_id"}, objs: map[string]*shape{"user": withID}},
		"GUILD_MEMBERS_CHUNK":   chunk,
		"GUILD_EMOJIS_UPDATE":   {ids: []string{"guild_id"}, lists: map[string]*shape{"emojis": withID}, needLists: []string{"emojis"}},
		"GUILD_STICKERS_UPDATE": {ids: []string{"guild_id"}, lists: map[string]*shape{"stickers": withID}, needLists: []string{"stickers"}},
		"USER_UPDATE":           withID,
		"VOICE_STATE_UPDATE": {ids: []string{"user_id"}, optIDs: []string{"guild_id", "channel_id"},
			optObjs: map[string]*shape{"member": withUser}},
		"PRESENCE_UPDATE":     {ids: []string{"guild_id"}, objs: map[string]*shape{"user": withID}},
		"MESSAGE_CREATE":      message,
		"MESSAGE_UPDATE":      message,
		"MESSAGE_DELETE":      {ids: []string{"id", "channel_id"}, optIDs: []string{"guild_id"}},
		"MESSAGE_DELETE_BULK": {ids: []string{"channel_id"}, optIDs: []string{"guild_id"}, idLists: []string{"ids"}},
	}
	for _, s := range shapes {
		s.compile()
	}
	return shapes
}

// rule is how one member of an object is checked.
type rule struct {
	kind     byte   // 'i' snowflake, 'o' object, 'l' array of objects, 'n' array of snowflakes
	sub      *shape // for 'o' and 'l'
	required int    // the member's bit among the required ones; -1 when it may be absent
	nullable bool   // null is allowed (and reads as absent, or as an empty array)
}

// compile indexes the shape's members by name, once, so that checking walks each object only once.
func (s *shape) compile() *shape {
	if s.rules != nil {
		return s // shared by several events, compiled already
	}
	s.rules = map[string]rule{}
	add := func(name string, r rule, required bool) {
		r.required = -1
		if required {
			r.required = s.nRequired
			s.nRequired++
			s.requiredNames = append(s.requiredNames, name)
		}
		s.rules[name] = r
	}
	for _, n := range s.ids {
		add(n, rule{kind: 'i'}, true)
	}
	for _, n := range s.optIDs {
		add(n, rule{kind: 'i', nullable: true}, false)
	}
	for n, sub := range s.objs {
		add(n, rule{kind: 'o', sub: sub.compile()}, true)
	}
	for n, sub := range s.optObjs {
		add(n, rule{kind: 'o', sub: sub.compile(), nullable: true}, false)
	}
	need := map[string]bool{}
	for _, n := range s.needLists {
		need[n] = true
	}
	for n, sub := range s.lists {
		add(n, rule{kind: 'l', sub: sub.compile(), nullable: true}, need[n])
	}
	for _, n := range s.idLists {
		add(n, rule{kind: 'n', nullable: true}, false)
	}
	return s
}

// check reports the first thing in obj that does not have shape s, as a badEvent naming it; path is
// where obj is in the event ("d", "d.channels[3]").
func (s *shape) check(obj []byte, path string) error {
	var seen uint64
	err := eachField(obj, func(k, v []byte) error {
		r, ok := s.rules[string(k)]
		if !ok {
			return nil
		}
		if r.required >= 0 {
			seen |= 1 << r.required
		}
		if isNull(v) {
			if r.nullable {
				return nil
			}
			return bad("%s.%s is null", path, k)
		}
		switch r.kind {
		case 'i':
			if _, ok := parseID(v); !ok {
				return bad("%s.%s is not a snowflake: %.40s", path, k, v)
			}
		case 'o':
			return r.sub.check(v, path+"."+string(k))
		case 'l', 'n':
			i := 0
			err := eachElem(v, func(e []byte) error {
				i++
				if r.kind == 'n' {
					if _, ok := parseID(e); !ok {
						return bad("%s.%s[%d] is not a snowflake: %.40s", path, k, i-1, e)
					}
					return nil
				}
				return r.sub.check(e, fmt.Sprintf("%s.%s[%d]", path, k, i-1))
			})
			var be *badEvent
			if err != nil && !errors.As(err, &be) {
				return bad("%s.%s is not an array", path, k)
			}
			return err
		}
		return nil
	})
	var be *badEvent
	switch {
	case errors.As(err, &be):
		return err
	case err != nil:
		return bad("%s is not a JSON object", path)
	}
	if all := uint64(1)<<s.nRequired - 1; seen != all {
		for i, name := range s.requiredNames {
			if seen&(1<<i) == 0 {
				return bad("%s.%s is missing", path, name)
			}
		}
	}
	return nil
}

func bad(format string, args ...any) error { return &badEvent{msg: fmt.Sprintf(format, args...)} }
