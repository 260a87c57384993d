package discordsim

import "net/http"

// gatewayState is owned by the gateway part of the simulator (placeholder until it is written).
type gatewayState struct{ s *Server }

func newGatewayState(s *Server) *gatewayState { return &gatewayState{s: s} }

func (s *Server) registerGateway(mux *http.ServeMux) {}

func (g *gatewayState) closeAll() {}

// SessionStartLimit is what /gateway/bot reports for one bot token.
type SessionStartLimit struct {
	Total          int `json:"total"`
	Remaining      int `json:"remaining"`
	ResetAfter     int `json:"reset_after"` // milliseconds
	MaxConcurrency int `json:"max_concurrency"`
}

// sessionStartLimit reports the identify budget of the bot with that token index.
func (g *gatewayState) sessionStartLimit(tokenIdx int) SessionStartLimit {
	c := g.s.cfg
	return SessionStartLimit{Total: c.SessionStartTotal, Remaining: c.SessionStartTotal,
		ResetAfter: int(c.SessionStartReset.Milliseconds()), MaxConcurrency: c.MaxConcurrency}
}
