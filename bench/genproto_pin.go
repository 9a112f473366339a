//go:build tools

package bench

// go-kit v0.13.0 requires google.golang.org/genproto from 2021, before
// googleapis/rpc became its own module. In the lbrpc workspace (go.work) both
// would provide google.golang.org/genproto/googleapis/rpc/status, which
// grpc-go imports: "ambiguous import". Requiring a split-era genproto fixes
// it, and this import (never built: the tools tag) keeps `go mod tidy` from
// dropping that requirement.
import _ "google.golang.org/genproto/protobuf/field_mask"
