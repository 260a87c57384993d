// Package zlibstream is a zlib (RFC 1950/1951) stream decoder built for many long-lived, mostly idle
// streams, such as Discord's zlib-stream gateway transport: one zlib stream per connection, sync-flushed
// at the end of every websocket message (00 00 ff ff), which the decoder must follow for the
// connection's lifetime.
//
// A deflate decoder's state between two sync-flushed messages is only its history, the last 32 KiB of
// output (and the bits left over from the last byte, none after a sync flush). A Reader stops at the first
// block boundary after its Source says the message is used up (parks), instead of waiting inside the next
// block header for the socket. When it has stayed parked for an idle period, it packs the history with a
// fast compressor (JSON packs several times over) and gives the decoding state (window, Huffman tables,
// about 40 KiB) back to a pool shared by all Readers; the next message unpacks it. A busy Reader never
// packs: a message that arrives within the idle period finds the decoder as it was.
//
// The stopping point is exact, not guessed from the 00 00 ff ff suffix: the decoder parks only before a
// block header, at the end of a message the Source reports as complete. A message whose deflate block
// goes on in the next message (a sender that did not flush) is decoded across the boundary as by any
// inflater; the Reader just does not pack at that point.
//
// The decoder is Go's compress/flate inflater (see inflate.go). The zlib trailer (Adler-32), which
// Discord never sends (the stream ends with the connection), is not checked.
package zlibstream
