package storage

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// The OpenHands webhook feed's state (package openhands) is a set of items
// per conversation: a usage bucket's highest cumulative values, a response
// id whose duration was observed, the conversation's flags. The feed names
// the items and encodes their values; the store keeps them under
//
//	'o' + conversation id + 0x00 + item name
//
// so that one conversation's items are contiguous and dropping a
// conversation is one range tombstone. The feed bounds how many
// conversations it keeps (the least recently used is dropped from here when
// it is forgotten), so the items are bounded like its memory.

// ohConvPrefix is the first key of conversation conv's items; the key
// after the last one is the same with 0x01 for the separator.
func ohConvPrefix(conv string, sep byte) []byte {
	k := make([]byte, 0, 2+len(conv))
	k = append(k, kindOpenHands)
	k = append(k, conv...)
	return append(k, sep)
}

// checkOHConv refuses a conversation id the key layout cannot hold.
func checkOHConv(conv string) error {
	if conv == "" || strings.IndexByte(conv, 0) >= 0 {
		return fmt.Errorf("storage: OpenHands conversation id %q is empty or holds a NUL byte", conv)
	}
	return nil
}

// OpenHandsState calls fn for every stored item of the OpenHands feed's
// state, one conversation's items together, in key order. The value is
// only valid during the call. An error of fn stops the scan and is
// returned.
func (s *Store) OpenHandsState(fn func(conv, item string, value []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindOpenHands}, UpperBound: []byte{kindOpenHands + 1}})
	if err != nil {
		return fmt.Errorf("read OpenHands state: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[1:]
		sep := bytes.IndexByte(k, 0)
		if sep <= 0 {
			_ = it.Close()
			return fmt.Errorf("storage: OpenHands state key %q is damaged", it.Key())
		}
		if err := fn(string(k[:sep]), string(k[sep+1:]), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("read OpenHands state: %w", err)
	}
	return nil
}

// WriteOpenHandsState drops the whole state of the conversations in drop,
// then writes set (conversation id -> item name -> value; a nil value
// deletes the item), atomically, synced unless Config.NoSync. It is
// refused with ErrDiskFull, before anything is written, when the disk is
// nearly full; a conversation id that is empty or holds a NUL byte is
// refused with nothing written.
func (s *Store) WriteOpenHandsState(drop []string, set map[string]map[string][]byte) error {
	if len(drop) == 0 && len(set) == 0 {
		return nil
	}
	for _, conv := range drop {
		if err := checkOHConv(conv); err != nil {
			return err
		}
	}
	for conv := range set {
		if err := checkOHConv(conv); err != nil {
			return err
		}
	}
	if err := s.checkSpace(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, conv := range drop {
		_ = b.DeleteRange(ohConvPrefix(conv, 0), ohConvPrefix(conv, 1), nil)
	}
	for conv, items := range set {
		prefix := ohConvPrefix(conv, 0)
		for item, v := range items {
			k := append(prefix[:len(prefix):len(prefix)], item...)
			if v == nil {
				_ = b.Delete(k, nil)
			} else {
				_ = b.Set(k, v, nil)
			}
		}
	}
	if err := b.Commit(s.wo); err != nil {
		s.writeErrors.Add(1)
		return fmt.Errorf("write OpenHands state: %w", err)
	}
	return nil
}
