package zstdstream

// Literals section, RFC 8878 section 3.1.1.3.1.

const (
	litRaw        = 0
	litRLE        = 1
	litCompressed = 2
	litTreeless   = 3
)

// decodeLiterals decodes the literals section at the start of src; it returns the literals and the rest
// of src (the sequences section).
func (r *Reader) decodeLiterals(src []byte, s *scratch) (lits, rest []byte, err error) {
	if len(src) == 0 {
		return nil, nil, errCorrupt("empty compressed block")
	}
	b0 := src[0]
	typ := b0 & 3
	sf := (b0 >> 2) & 3
	if typ == litRaw || typ == litRLE {
		var regen, hs int
		switch sf {
		case 0, 2:
			regen, hs = int(b0>>3), 1
		case 1:
			if len(src) < 2 {
				return nil, nil, errCorrupt("truncated literals section")
			}
			regen, hs = int(b0>>4)|int(src[1])<<4, 2
		default:
			if len(src) < 3 {
				return nil, nil, errCorrupt("truncated literals section")
			}
			regen, hs = int(b0>>4)|int(src[1])<<4|int(src[2])<<12, 3
		}
		if regen > r.blockMax {
			return nil, nil, errCorrupt("literals larger than the maximum block size")
		}
		if typ == litRaw {
			if hs+regen > len(src) {
				return nil, nil, errCorrupt("truncated literals section")
			}
			return src[hs : hs+regen], src[hs+regen:], nil
		}
		if hs >= len(src) {
			return nil, nil, errCorrupt("truncated literals section")
		}
		lits = s.litsBuf(regen)
		c := src[hs]
		for i := range lits {
			lits[i] = c
		}
		return lits, src[hs+1:], nil
	}

	var hs, nbits, streams int
	switch sf {
	case 0:
		hs, nbits, streams = 3, 10, 1
	case 1:
		hs, nbits, streams = 3, 10, 4
	case 2:
		hs, nbits, streams = 4, 14, 4
	default:
		hs, nbits, streams = 5, 18, 4
	}
	if len(src) < hs {
		return nil, nil, errCorrupt("truncated literals section")
	}
	var h uint64
	for i := hs - 1; i >= 0; i-- {
		h = h<<8 | uint64(src[i])
	}
	mask := uint64(1)<<nbits - 1
	regen := int((h >> 4) & mask)
	csize := int((h >> (4 + nbits)) & mask)
	if regen > r.blockMax {
		return nil, nil, errCorrupt("literals larger than the maximum block size")
	}
	if hs+csize > len(src) {
		return nil, nil, errCorrupt("truncated literals section")
	}
	data := src[hs : hs+csize]
	rest = src[hs+csize:]
	if typ == litCompressed {
		n, err := readHufTree(data, &r.huf, s)
		if err != nil {
			return nil, nil, err
		}
		data = data[n:]
	} else if r.huf.n == 0 {
		return nil, nil, errCorrupt("treeless literals without a previous Huffman tree")
	}
	log := buildHufTable(&r.huf, s.huf[:])
	table := s.huf[:1<<log]
	lits = s.litsBuf(regen)
	if streams == 1 {
		if err := decodeHufStream(lits, data, table, log); err != nil {
			return nil, nil, err
		}
		return lits, rest, nil
	}
	if len(data) < 6 {
		return nil, nil, errCorrupt("truncated literals jump table")
	}
	l1 := int(data[0]) | int(data[1])<<8
	l2 := int(data[2]) | int(data[3])<<8
	l3 := int(data[4]) | int(data[5])<<8
	data = data[6:]
	if l1+l2+l3 > len(data) {
		return nil, nil, errCorrupt("invalid literals jump table")
	}
	seg := (regen + 3) / 4
	if 3*seg > regen {
		return nil, nil, errCorrupt("too few literals for 4 streams")
	}
	ins := [4][]byte{data[:l1], data[l1 : l1+l2], data[l1+l2 : l1+l2+l3], data[l1+l2+l3:]}
	for i := 0; i < 4; i++ {
		end := (i + 1) * seg
		if i == 3 {
			end = regen
		}
		if err := decodeHufStream(lits[i*seg:end], ins[i], table, log); err != nil {
			return nil, nil, err
		}
	}
	return lits, rest, nil
}
