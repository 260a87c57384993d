package zstdstream

// Sequences section, RFC 8878 section 3.1.1.3.2, and sequence execution (3.1.1.4).

const (
	maxLLSym = 35
	maxMLSym = 52
	maxOFSym = 31
	maxLLLog = 9
	maxMLLog = 9
	maxOFLog = 8
)

// seqEntry is a state of a literal-length, match-length or offset decoding table, with its symbol's
// baseline and number of extra bits folded in.
type seqEntry struct {
	base    uint32
	next    uint16 // baseline of the next state
	nbBits  uint8  // bits read for the next state
	addBits uint8  // extra bits of the value
}

var llBase = [maxLLSym + 1]uint32{
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
	16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096,
	8192, 16384, 32768, 65536}
var llBits = [maxLLSym + 1]uint8{
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12,
	13, 14, 15, 16}
var mlBase = [maxMLSym + 1]uint32{
	3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
	19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
	35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051,
	4099, 8195, 16387, 32771, 65539}
var mlBits = [maxMLSym + 1]uint8{
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11,
	12, 13, 14, 15, 16}

// Default distributions, RFC 8878 3.1.1.3.2.2.
var (
	llDefault = []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
		2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
		-1, -1, -1, -1}
	mlDefault = []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1,
		-1, -1, -1, -1, -1}
	ofDefault = []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}
)

type seqKind uint8

const (
	kindLL seqKind = iota
	kindOF
	kindML
)

func (k seqKind) value(sym uint8) (uint32, uint8) {
	switch k {
	case kindLL:
		return llBase[sym], llBits[sym]
	case kindML:
		return mlBase[sym], mlBits[sym]
	}
	return 1 << sym, sym
}

func (k seqKind) limits() (maxSym, maxLog int) {
	switch k {
	case kindLL:
		return maxLLSym, maxLLLog
	case kindML:
		return maxMLSym, maxMLLog
	}
	return maxOFSym, maxOFLog
}

// Predefined decoding tables, built once.
var (
	llPredef [1 << 6]seqEntry
	mlPredef [1 << 6]seqEntry
	ofPredef [1 << 5]seqEntry
)

func init() {
	var symbols [512]uint8
	var next [512]uint16
	for _, p := range []struct {
		k     seqKind
		norm  []int16
		log   int
		table []seqEntry
	}{{kindLL, llDefault, 6, llPredef[:]}, {kindML, mlDefault, 6, mlPredef[:]}, {kindOF, ofDefault, 5, ofPredef[:]}} {
		if err := buildSeqTable(p.k, p.norm, len(p.norm), p.log, p.table, symbols[:], next[:]); err != nil {
			panic(err)
		}
	}
}

func buildSeqTable(k seqKind, norm []int16, nsym, log int, table []seqEntry, symbols []uint8, next []uint16) error {
	if err := spread(norm, nsym, log, symbols, next); err != nil {
		return err
	}
	for u := 0; u < 1<<log; u++ {
		nb, nx := stateBits(next[u], log)
		base, add := k.value(symbols[u])
		table[u] = seqEntry{base: base, next: nx, nbBits: nb, addBits: add}
	}
	return nil
}

// Compression modes.
const (
	modePredefined = 0
	modeRLE        = 1
	modeFSE        = 2
	modeRepeat     = 3
)

// seqTableState is the compact description of a table kept between blocks for Repeat mode.
type seqTableState struct {
	mode uint8 // 0: none yet; else modePredefined, modeRLE or modeFSE (+1)
	sym  uint8 // RLE symbol
	log  uint8
	nsym uint8
	norm [maxMLSym + 1]int16
}

// table returns the decoding table of kind k for a block in mode, reading its description from src; it
// returns the table, its accuracy log and the bytes of src used.
func (st *seqTableState) table(k seqKind, mode uint8, src []byte, s *scratch, dst []seqEntry) ([]seqEntry, uint8, int, error) {
	maxSym, maxLog := k.limits()
	used := 0
	switch mode {
	case modePredefined:
		st.mode = modePredefined + 1
	case modeRLE:
		if len(src) == 0 {
			return nil, 0, 0, errCorrupt("truncated sequences section")
		}
		if int(src[0]) > maxSym {
			return nil, 0, 0, errCorrupt("invalid RLE symbol")
		}
		st.mode, st.sym, used = modeRLE+1, src[0], 1
	case modeFSE:
		log, nsym, n, err := readNCount(src, st.norm[:], maxSym, maxLog)
		if err != nil {
			return nil, 0, 0, err
		}
		st.mode, st.log, st.nsym, used = modeFSE+1, uint8(log), uint8(nsym), n
	case modeRepeat:
		if st.mode == 0 {
			return nil, 0, 0, errCorrupt("repeat mode without a previous table")
		}
	}
	switch st.mode - 1 {
	case modePredefined:
		switch k {
		case kindLL:
			return llPredef[:], 6, used, nil
		case kindML:
			return mlPredef[:], 6, used, nil
		}
		return ofPredef[:], 5, used, nil
	case modeRLE:
		base, add := k.value(st.sym)
		dst[0] = seqEntry{base: base, addBits: add}
		return dst[:1], 0, used, nil
	}
	if err := buildSeqTable(k, st.norm[:], int(st.nsym), int(st.log), dst, s.symbols[:], s.next[:]); err != nil {
		return nil, 0, 0, err
	}
	return dst[:1<<st.log], st.log, used, nil
}

// decodeSequences decodes the sequences section src and executes the sequences: the block's output is
// built in s.out from lits and the history; it returns the block's size.
func (r *Reader) decodeSequences(src, lits []byte, s *scratch) (int, error) {
	out := s.out[:r.blockMax]
	if len(src) == 0 {
		return 0, errCorrupt("missing sequences section")
	}
	nseq := int(src[0])
	switch {
	case nseq == 0:
		if len(src) != 1 {
			return 0, errCorrupt("bytes after an empty sequences section")
		}
		if len(lits) > len(out) {
			return 0, errCorrupt("block larger than its maximum size")
		}
		return copy(out, lits), nil
	case nseq < 128:
		src = src[1:]
	case nseq < 255:
		if len(src) < 2 {
			return 0, errCorrupt("truncated sequences section")
		}
		nseq = (nseq-128)<<8 | int(src[1])
		src = src[2:]
	default:
		if len(src) < 3 {
			return 0, errCorrupt("truncated sequences section")
		}
		nseq = int(src[1]) | int(src[2])<<8 + 0x7F00
		src = src[3:]
	}
	if len(src) == 0 {
		return 0, errCorrupt("truncated sequences section")
	}
	modes := src[0]
	if modes&3 != 0 {
		return 0, errCorrupt("reserved bits set in symbol compression modes")
	}
	src = src[1:]
	llT, llLog, n, err := r.llPrev.table(kindLL, modes>>6, src, s, s.ll[:])
	if err != nil {
		return 0, err
	}
	src = src[n:]
	ofT, ofLog, n, err := r.ofPrev.table(kindOF, (modes>>4)&3, src, s, s.of[:])
	if err != nil {
		return 0, err
	}
	src = src[n:]
	mlT, mlLog, n, err := r.mlPrev.table(kindML, (modes>>2)&3, src, s, s.ml[:])
	if err != nil {
		return 0, err
	}
	src = src[n:]

	var br backReader
	if err := br.init(src); err != nil {
		return 0, err
	}
	br.fill()
	llMask, ofMask, mlMask := uint32(len(llT)-1), uint32(len(ofT)-1), uint32(len(mlT)-1)
	llS := br.get(llLog) & llMask
	ofS := br.get(ofLog) & ofMask
	mlS := br.get(mlLog) & mlMask

	hist := r.hist
	histLen := len(hist)
	rep := r.rep
	o := 0
	for i := 0; i < nseq; i++ {
		br.fill()
		ofE, mlE, llE := ofT[ofS], mlT[mlS], llT[llS]
		// After a fill at least 57 bits are available (unless the stream's start is near, where reading
		// zeros past it is caught by overflowed): refill only when this sequence needs more.
		extra := uint(ofE.addBits) + uint(mlE.addBits) + uint(llE.addBits)
		ofv := ofE.base + br.get(ofE.addBits)
		if extra > 56 {
			br.fill()
		}
		ml := int(mlE.base + br.get(mlE.addBits))
		ll := int(llE.base + br.get(llE.addBits))
		if i+1 < nseq {
			if extra+uint(llE.nbBits)+uint(mlE.nbBits)+uint(ofE.nbBits) > 56 {
				br.fill()
			}
			llS = (uint32(llE.next) + br.get(llE.nbBits)) & llMask
			mlS = (uint32(mlE.next) + br.get(mlE.nbBits)) & mlMask
			ofS = (uint32(ofE.next) + br.get(ofE.nbBits)) & ofMask
		}
		if br.overflowed() {
			return 0, errCorrupt("sequences bit stream overrun")
		}

		var off int
		if ofv > 3 {
			off = int(ofv - 3)
			rep[2], rep[1], rep[0] = rep[1], rep[0], off
		} else {
			idx := int(ofv) - 1
			if ll == 0 {
				idx++
			}
			switch idx {
			case 0:
				off = rep[0]
			case 1:
				off = rep[1]
				rep[1], rep[0] = rep[0], off
			case 2:
				off = rep[2]
				rep[2], rep[1], rep[0] = rep[1], rep[0], off
			default:
				off = rep[0] - 1
				if off == 0 {
					return 0, errCorrupt("zero offset")
				}
				rep[2], rep[1], rep[0] = rep[1], rep[0], off
			}
		}

		if ll > len(lits) {
			return 0, errCorrupt("literal length beyond the literals")
		}
		if ll+ml > len(out)-o {
			return 0, errCorrupt("block larger than its maximum size")
		}
		copy(out[o:], lits[:ll])
		lits = lits[ll:]
		o += ll

		if off > o {
			// The match starts in the history.
			d := off - o
			if d > histLen || off > r.window {
				return 0, errCorrupt("offset beyond the window")
			}
			start := r.wpos - d
			if start < 0 {
				start += histLen
			}
			for d > 0 && ml > 0 {
				n := copy(out[o:o+min(d, ml)], hist[start:])
				o += n
				ml -= n
				d -= n
				start = 0
			}
			if ml == 0 {
				continue
			}
		}
		// The rest of the match is in this block: out[o-off:o] repeats with period off.
		from := o - off
		for ml > 0 {
			n := copy(out[o:o+ml], out[from:o])
			o += n
			ml -= n
		}
	}
	if !br.finished() {
		return 0, errCorrupt("sequences bit stream not fully consumed")
	}
	if len(lits) > len(out)-o {
		return 0, errCorrupt("block larger than its maximum size")
	}
	o += copy(out[o:], lits)
	r.rep = rep
	return o, nil
}
