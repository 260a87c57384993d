// Package zstdstream is a streaming Zstandard decoder (RFC 8878) built for many long-lived, mostly idle
// streams, such as Discord's zstd-stream gateway transport: one zstd frame per connection, flushed at the
// end of every websocket message, which the decoder must follow for the connection's lifetime.
//
// Between blocks a Reader keeps only what the format requires it to carry: the last Window_Size bytes of
// output (a ring that grows with the output and never beyond the window), the three repeat offsets, the
// weights of the previous Huffman tree and the normalized distributions of the previous literal-length,
// offset and match-length FSE tables. Everything needed to decode one block (the compressed block, the
// literals, the decoded block and the decoding tables) is taken from a sync.Pool shared by all Readers when
// a block is decoded and returned right after, so an idle Reader costs about its window plus a few hundred
// bytes; with SetIdle, a Reader whose caller waits through WaitMessage packs the window after the idle
// period (see idle.go), and costs a fraction of it.
//
// Read returns a block's bytes as soon as that block is decoded: it reads the 3-byte block header, then
// exactly Block_Size bytes, and never asks its source for more before the block's bytes are served.
//
// Dictionaries are not supported.
package zstdstream
