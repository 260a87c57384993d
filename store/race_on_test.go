//go:build race

package store

// raceDetector is whether the tests run under -race.
const raceDetector = true
