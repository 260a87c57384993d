package zstdstream

// FSE (tANS) table descriptions and decoding tables, RFC 8878 section 4.1.

// forward returns up to 32 bits of src starting at bit pos (little endian, least significant bit first),
// zeros past the end.
func forward(src []byte, pos int) uint32 {
	i := pos >> 3
	var v uint32
	for k := 3; k >= 0; k-- {
		v <<= 8
		if i+k < len(src) {
			v |= uint32(src[i+k])
		}
	}
	return v >> uint(pos&7)
}

// readNCount reads an FSE table description (normalized distribution) at the start of src into norm,
// allowing symbols 0..maxSym and an accuracy log up to maxLog. It returns the accuracy log, the number of
// symbols described and the bytes used.
func readNCount(src []byte, norm []int16, maxSym, maxLog int) (log, nsym, used int, err error) {
	if len(src) == 0 {
		return 0, 0, 0, errCorrupt("missing FSE table description")
	}
	log = int(src[0]&15) + 5
	if log > maxLog {
		return 0, 0, 0, errCorrupt("FSE accuracy log too large")
	}
	pos := 4
	remaining := (1 << log) + 1
	threshold := 1 << log
	nbBits := log + 1
	sym := 0
	prev0 := false
	for remaining > 1 && sym <= maxSym {
		if prev0 {
			n0 := sym
			for {
				rep := int(forward(src, pos) & 3)
				pos += 2
				n0 += rep
				if rep != 3 {
					break
				}
				if pos > len(src)*8 {
					return 0, 0, 0, errCorrupt("truncated FSE table description")
				}
			}
			if n0 > maxSym {
				return 0, 0, 0, errCorrupt("FSE table description has too many symbols")
			}
			for sym < n0 {
				norm[sym] = 0
				sym++
			}
		}
		v := int(forward(src, pos))
		max := 2*threshold - 1 - remaining
		var count int
		if v&(threshold-1) < max {
			count = v & (threshold - 1)
			pos += nbBits - 1
		} else {
			count = v & (2*threshold - 1)
			if count >= threshold {
				count -= max
			}
			pos += nbBits
		}
		count--
		if count < 0 {
			remaining--
		} else {
			remaining -= count
		}
		norm[sym] = int16(count)
		sym++
		prev0 = count == 0
		if remaining < 1 {
			break
		}
		for remaining < threshold {
			nbBits--
			threshold >>= 1
		}
		if pos > len(src)*8 {
			return 0, 0, 0, errCorrupt("truncated FSE table description")
		}
	}
	if remaining != 1 || pos > len(src)*8 {
		return 0, 0, 0, errCorrupt("invalid FSE table description")
	}
	return log, sym, (pos + 7) >> 3, nil
}

// spread distributes the symbols over the 1<<log states (RFC 8878 4.1.1) and fills next with each state's
// position among its symbol's states plus its symbol's count: after spread, for state u,
// symbols[u] is its symbol and next[u] the value from which its number of bits and baseline follow.
func spread(norm []int16, nsym, log int, symbols []uint8, next []uint16) error {
	size := 1 << log
	high := size - 1
	var counts [256]uint16
	for s := 0; s < nsym; s++ {
		if norm[s] == -1 {
			if high < 0 {
				return errCorrupt("invalid FSE distribution")
			}
			symbols[high] = uint8(s)
			high--
			counts[s] = 1
		} else {
			counts[s] = uint16(norm[s])
		}
	}
	pos := 0
	step := (size >> 1) + (size >> 3) + 3
	mask := size - 1
	for s := 0; s < nsym; s++ {
		for i := 0; i < int(norm[s]); i++ {
			symbols[pos] = uint8(s)
			pos = (pos + step) & mask
			for pos > high {
				pos = (pos + step) & mask
			}
		}
	}
	if pos != 0 {
		return errCorrupt("invalid FSE distribution")
	}
	for u := 0; u < size; u++ {
		s := symbols[u]
		next[u] = counts[s]
		counts[s]++
	}
	return nil
}

// stateBits returns, for a state whose next value is n in a table of accuracy log, the number of bits
// to read and the baseline of the next state.
func stateBits(n uint16, log int) (nb uint8, base uint16) {
	nb = uint8(log - int(highBit(uint32(n))))
	return nb, uint16((uint32(n) << nb) - (1 << log))
}

// fseEntry is a state of a small FSE table (Huffman weights).
type fseEntry struct {
	sym    uint8
	nbBits uint8
	base   uint16
}

func buildFSE(norm []int16, nsym, log int, table []fseEntry, symbols []uint8, next []uint16) error {
	if err := spread(norm, nsym, log, symbols, next); err != nil {
		return err
	}
	for u := 0; u < 1<<log; u++ {
		nb, base := stateBits(next[u], log)
		table[u] = fseEntry{sym: symbols[u], nbBits: nb, base: base}
	}
	return nil
}
