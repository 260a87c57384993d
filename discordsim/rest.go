package discordsim

import "net/http"

// restState is owned by the REST part of the simulator (placeholder until it is written).
type restState struct{ s *Server }

func newRESTState(s *Server) *restState { return &restState{s: s} }

func (s *Server) registerREST(mux *http.ServeMux) {}
