package zstdstream

// Huffman-coded literals, RFC 8878 sections 3.1.1.3.1 and 4.2.

const maxHufLog = 12 // the reference decoder's limit; RFC 8878 encoders use at most 11

// hufTree is the compact description of a Huffman tree kept between blocks: the weight of every symbol
// (the last one included).
type hufTree struct {
	n int // number of symbols with a weight (the last weight included); 0: none
	w [256]uint8
}

// readHufTree reads a Huffman tree description at the start of src into t; it returns the bytes used.
func readHufTree(src []byte, t *hufTree, s *scratch) (int, error) {
	if len(src) == 0 {
		return 0, errCorrupt("missing Huffman tree description")
	}
	hb := int(src[0])
	var nw, used int
	if hb >= 128 {
		nw = hb - 127
		used = 1 + (nw+1)/2
		if used > len(src) {
			return 0, errCorrupt("truncated Huffman tree description")
		}
		for i := 0; i < nw; i++ {
			b := src[1+i/2]
			if i&1 == 0 {
				t.w[i] = b >> 4
			} else {
				t.w[i] = b & 15
			}
		}
	} else {
		used = 1 + hb
		if used > len(src) {
			return 0, errCorrupt("truncated Huffman tree description")
		}
		var err error
		nw, err = decodeWeights(src[1:used], t.w[:255], s)
		if err != nil {
			return 0, err
		}
	}
	if nw > 255 {
		return 0, errCorrupt("too many Huffman weights")
	}
	var total uint32
	for i := 0; i < nw; i++ {
		w := t.w[i]
		if w > maxHufLog {
			return 0, errCorrupt("Huffman weight too large")
		}
		if w > 0 {
			total += 1 << (w - 1)
		}
	}
	if total == 0 {
		return 0, errCorrupt("empty Huffman tree")
	}
	log := highBit(total) + 1
	if log > maxHufLog {
		return 0, errCorrupt("Huffman tree too deep")
	}
	rest := (uint32(1) << log) - total
	if rest&(rest-1) != 0 {
		return 0, errCorrupt("invalid Huffman weights")
	}
	t.w[nw] = uint8(highBit(rest) + 1)
	t.n = nw + 1
	for i := t.n; i < 256; i++ {
		t.w[i] = 0
	}
	return used, nil
}

// decodeWeights decodes FSE-compressed Huffman weights (two interleaved states) into dst.
func decodeWeights(src []byte, dst []uint8, s *scratch) (int, error) {
	var norm [16]int16
	log, nsym, used, err := readNCount(src, norm[:], 15, 6)
	if err != nil {
		return 0, err
	}
	table := s.wTable[:1<<log]
	if err := buildFSE(norm[:], nsym, log, table, s.symbols[:], s.next[:]); err != nil {
		return 0, err
	}
	var br backReader
	if err := br.init(src[used:]); err != nil {
		return 0, err
	}
	mask := uint32(1)<<log - 1
	s1 := br.get(uint8(log)) & mask
	s2 := br.get(uint8(log)) & mask
	n := 0
	for {
		if n+2 > len(dst) {
			return 0, errCorrupt("too many Huffman weights")
		}
		br.fill()
		e := table[s1]
		dst[n] = e.sym
		n++
		s1 = (uint32(e.base) + br.get(e.nbBits)) & mask
		if br.overflowed() {
			dst[n] = table[s2].sym
			n++
			break
		}
		e = table[s2]
		dst[n] = e.sym
		n++
		s2 = (uint32(e.base) + br.get(e.nbBits)) & mask
		if br.overflowed() {
			dst[n] = table[s1].sym
			n++
			break
		}
	}
	return n, nil
}

// buildHufTable fills table with the decoding table of t: entry = symbol | number of bits << 8, indexed
// by the next log bits of the stream. It returns log.
func buildHufTable(t *hufTree, table []uint16) uint8 {
	var total uint32
	var rank [maxHufLog + 2]uint32
	for i := 0; i < t.n; i++ {
		if w := t.w[i]; w > 0 {
			total += 1 << (w - 1)
			rank[w] += 1 << (w - 1)
		}
	}
	log := uint8(highBit(total))
	// start position of each weight: lower weights (longer codes) first.
	var start [maxHufLog + 2]uint32
	p := uint32(0)
	for w := 1; w <= maxHufLog+1; w++ {
		start[w] = p
		p += rank[w]
	}
	for i := 0; i < t.n; i++ {
		w := t.w[i]
		if w == 0 {
			continue
		}
		e := uint16(i) | uint16(log+1-w)<<8
		n := uint32(1) << (w - 1)
		seg := table[start[w] : start[w]+n]
		for j := range seg {
			seg[j] = e
		}
		start[w] += n
	}
	return log
}

// decodeHufStream decodes exactly len(dst) symbols from the backward bit stream src.
func decodeHufStream(dst, src []byte, table []uint16, log uint8) error {
	var br backReader
	if err := br.init(src); err != nil {
		return err
	}
	shift := 64 - uint(log)
	mask := uint64(len(table) - 1)
	i := 0
	n := len(dst)
	limit := 64 - 4*uint(log)
	for i+4 <= n {
		br.fill()
		if br.consumed > limit {
			break
		}
		v := br.value
		c := br.consumed
		e0 := table[((v<<c)>>shift)&mask]
		c += uint(e0 >> 8)
		e1 := table[((v<<c)>>shift)&mask]
		c += uint(e1 >> 8)
		e2 := table[((v<<c)>>shift)&mask]
		c += uint(e2 >> 8)
		e3 := table[((v<<c)>>shift)&mask]
		c += uint(e3 >> 8)
		br.consumed = c
		d := dst[i : i+4 : i+4]
		d[0], d[1], d[2], d[3] = byte(e0), byte(e1), byte(e2), byte(e3)
		i += 4
	}
	for ; i < n; i++ {
		br.fill()
		e := table[((br.value<<br.consumed)>>shift)&mask]
		br.consumed += uint(e >> 8)
		dst[i] = byte(e)
		if br.consumed > 64 {
			return errCorrupt("Huffman stream overrun")
		}
	}
	if !br.finished() {
		return errCorrupt("Huffman stream not fully consumed")
	}
	return nil
}
