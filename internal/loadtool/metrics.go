package loadtool

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Metric is one sample of a Prometheus text exposition.
type Metric struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is a scrape of dd's GET /metrics.
type Metrics []Metric

// ParseMetrics reads the Prometheus text format (version 0.0.4): comments and blank lines are skipped,
// label values may hold escaped quotes, backslashes and newlines, a trailing timestamp is ignored.
func ParseMetrics(text string) (Metrics, error) {
	var out Metrics
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		m, err := parseMetricLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %.120q: %w", n+1, line, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMetricLine(line string) (Metric, error) {
	var m Metric
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return m, fmt.Errorf("no value")
	}
	m.Name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		m.Labels = map[string]string{}
		j := 1
		for {
			for j < len(rest) && (rest[j] == ' ' || rest[j] == ',') {
				j++
			}
			if j >= len(rest) {
				return m, fmt.Errorf("unterminated labels")
			}
			if rest[j] == '}' {
				j++
				break
			}
			eq := strings.IndexByte(rest[j:], '=')
			if eq < 0 || j+eq+1 >= len(rest) || rest[j+eq+1] != '"' {
				return m, fmt.Errorf("label without a quoted value")
			}
			name := strings.TrimSpace(rest[j : j+eq])
			j += eq + 2
			var val strings.Builder
			for {
				if j >= len(rest) {
					return m, fmt.Errorf("unterminated label value")
				}
				c := rest[j]
				if c == '"' {
					j++
					break
				}
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						c = '\n'
					default:
						c = rest[j]
					}
				}
				val.WriteByte(c)
				j++
			}
			m.Labels[name] = val.String()
		}
		rest = rest[j:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || len(fields) > 2 {
		return m, fmt.Errorf("want a value and an optional timestamp")
	}
	v, err := parseMetricValue(fields[0])
	if err != nil {
		return m, err
	}
	m.Value = v
	return m, nil
}

func parseMetricValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// Sum adds the samples of name whose labels include every pair of match (name=value, ...), and says
// whether any matched.
func (ms Metrics) Sum(name string, match ...string) (float64, bool) {
	var sum float64
	found := false
next:
	for _, m := range ms {
		if m.Name != name {
			continue
		}
		for i := 0; i+1 < len(match); i += 2 {
			if m.Labels[match[i]] != match[i+1] {
				continue next
			}
		}
		sum += m.Value
		found = true
	}
	return sum, found
}

// Value is Sum without the found flag: 0 when nothing matched.
func (ms Metrics) Value(name string, match ...string) float64 {
	v, _ := ms.Sum(name, match...)
	return v
}
