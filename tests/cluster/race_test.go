//go:build race

package clusterproc

// raceEnabled: the test process runs under the race detector (its simulator and bot are slowed), so
// rates measured here are not figures.
const raceEnabled = true
