package shard

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ddhq/dd/store"
)

// SessionStore keeps shard sessions in the store, so a restarted dd resumes instead of identifying.
// The sink writes a session with SessionRecord inside the same commit as its events.
type SessionStore struct{ st *store.Store }

// NewSessionStore uses st.
func NewSessionStore(st *store.Store) *SessionStore { return &SessionStore{st: st} }

// SessionKey is where the session of shard id of num lives.
func SessionKey(id, num int) []byte { return []byte(fmt.Sprintf("session/%d/%d", num, id)) }

// SessionRecord returns the key and value that store a session.
func SessionRecord(s Session) (key, value []byte) {
	value, _ = json.Marshal(s)
	return SessionKey(s.ShardID, s.NumShards), value
}

// LoadSession implements SessionLoader.
func (ss *SessionStore) LoadSession(id, num int) (Session, bool, error) {
	v, err := ss.st.Get(SessionKey(id, num))
	if errors.Is(err, store.ErrNotFound) {
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, err
	}
	var s Session
	if err := json.Unmarshal(v, &s); err != nil {
		return Session{}, false, fmt.Errorf("stored session of shard %d/%d is corrupt: %w", id, num, err)
	}
	return s, s.Resumable(), nil
}

// Save stores a session on its own.
func (ss *SessionStore) Save(s Session) error {
	k, v := SessionRecord(s)
	return ss.st.Update(func(w store.Writer) error { return w.Set(k, v) })
}
