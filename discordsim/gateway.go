package discordsim

import "net/http"

// gatewayState is owned by the gateway part of the simulator (placeholder until it is written).
type gatewayState struct{ s *Server }

func newGatewayState(s *Server) *gatewayState { return &gatewayState{s: s} }

func (s *Server) registerGateway(mux *http.ServeMux) {}

func (g *gatewayState) closeAll() {}
