package health

import (
	"errors"
	"net/rpc"
	"sync"
)

// Name is the name the service is registered under, so clients call
// Name + ".Check" ("Health.Check").
const Name = "Health"

// ErrUnknownService is the error of a Check for a service the Service has
// not been told about. Clients receive it as an rpc.ServerError with the
// same text.
var ErrUnknownService = errors.New("lbrpc/health: unknown service")

// Status is a server's or a service's readiness to take calls.
type Status int

// The statuses. The zero value, Unknown, is never reported by Check.
const (
	Unknown    Status = iota
	Serving           // ready to take calls
	NotServing        // up, but not taking new calls (draining, warming up, sick)
)

// String returns "unknown", "serving" or "not serving".
func (s Status) String() string {
	switch s {
	case Serving:
		return "serving"
	case NotServing:
		return "not serving"
	default:
		return "unknown"
	}
}

// Request asks for the status of one service, or of the whole server when
// Service is empty.
type Request struct {
	Service string
}

// Response is the answer to a Request.
type Response struct {
	Status Status
}

// Service answers health checks. The zero value is not usable: make one
// with New or Register. A Service is safe for concurrent use; its status
// can change while checks are served.
type Service struct {
	mu       sync.RWMutex
	serving  bool
	services map[string]bool
}

// New returns a Service that reports the server as serving and knows no
// named service. Register it under Name (or use Register).
func New() *Service {
	return &Service{serving: true, services: map[string]bool{}}
}

// Register makes a new Service (see New), registers it on server under
// Name, and returns it so that the server can change its status later.
func Register(server *rpc.Server) (*Service, error) {
	if server == nil {
		return nil, errors.New("lbrpc/health: nil server")
	}
	s := New()
	if err := server.RegisterName(Name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// SetServing sets the status of the server as a whole: false makes every
// Check answer NotServing, whatever the named services say. Use it to take
// the server out of clients' rotation before a drain or a restart.
func (s *Service) SetServing(serving bool) {
	s.mu.Lock()
	s.serving = serving
	s.mu.Unlock()
}

// SetServiceServing sets the status of one named service, for servers that
// host several. The empty name is the server as a whole (SetServing).
func (s *Service) SetServiceServing(service string, serving bool) {
	if service == "" {
		s.SetServing(serving)
		return
	}
	s.mu.Lock()
	s.services[service] = serving
	s.mu.Unlock()
}

// Check is the net/rpc method Health.Check. It reports Serving or
// NotServing for req.Service (the whole server when empty), and fails with
// ErrUnknownService for a name never set with SetServiceServing.
func (s *Service) Check(req Request, resp *Response) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	serving := s.serving
	if req.Service != "" {
		named, ok := s.services[req.Service]
		if !ok {
			return ErrUnknownService
		}
		serving = serving && named
	}
	resp.Status = NotServing
	if serving {
		resp.Status = Serving
	}
	return nil
}
