package store

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// Reader reads a consistent snapshot of the store.
type Reader interface {
	// Get returns a copy of the value at key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Has reports whether key is stored, without reading its value.
	Has(key []byte) (bool, error)
	// Scan is Store.Scan within the transaction. With keysOnly, fn gets a nil value and no value is read.
	Scan(prefix, from []byte, keysOnly bool, fn func(key, value []byte) error) error
}

// Txn is a read-write transaction whose reads see its own writes, for users that decide what to write
// from what is stored (the cache counts what it adds and removes). Its writes are stored at Commit, all
// or none; Discard drops them. A Txn is not safe for concurrent use. Set returns ErrTooBig when the
// transaction cannot take more: Commit it and go on in a new one. Commit returns ErrDiskFull (and
// writes nothing) while the disk is short of space.
type Txn interface {
	Reader
	Writer
	Commit() error
	Discard()
}

// View calls fn with a read-only snapshot (several reads that must agree, at the cost of one).
func (s *Store) View(fn func(r Reader) error) error {
	return s.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn: txn}) })
}

// Begin starts a read-write transaction.
func (s *Store) Begin() Txn {
	return badgerTxn{txn: s.db.NewTransaction(true), s: s, w: &txnWriter{}}
}

type badgerTxn struct {
	txn *badger.Txn
	s   *Store     // nil in View
	w   *txnWriter // counts what Commit writes, as Update does
}

func (t badgerTxn) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t badgerTxn) Has(key []byte) (bool, error) {
	_, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (t badgerTxn) Scan(prefix, from []byte, keysOnly bool, fn func(key, value []byte) error) error {
	return scan(t.txn, prefix, from, keysOnly, fn)
}

func (t badgerTxn) Set(k, v []byte) error {
	if len(v) >= valueThreshold {
		t.w.values += len(v)
	}
	return t.txn.Set(k, v)
}

func (t badgerTxn) Delete(k []byte) error { t.w.deleted++; return t.txn.Delete(k) }
func (t badgerTxn) Discard()              { t.txn.Discard() }

func (t badgerTxn) Commit() error {
	if err := t.s.writable(false); err != nil {
		t.txn.Discard()
		return err
	}
	t.s.writeMu.RLock() // not while the store flushes (valuelog.go)
	defer t.s.writeMu.RUnlock()
	if err := t.txn.Commit(); err != nil {
		return err
	}
	t.s.deleted.Add(int64(t.w.deleted))
	t.s.valuesWritten.Add(int64(t.w.values))
	return nil
}
