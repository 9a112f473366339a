package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A DocSection is the part of a Markdown document that one program owns:
// everything from its Begin marker to its End marker. Several programs can
// share a document, each with its own markers; Update leaves everything
// outside its own markers byte for byte.
//
// A DocSection is a plain value, safe for concurrent use, but two Updates of
// the same file at once race like any two writers.
type DocSection struct {
	Begin, End string // the marker lines, such as "<!-- compare:begin -->"
	// Heading, if not "", goes above the markers (and a blank line) when
	// Update adds them to a document that has none.
	Heading string
	// NewDoc is the document to start from when the file does not exist;
	// "" starts from an empty one. If it holds the markers, the section
	// goes between them; if not, at its end.
	NewDoc string
}

// Update writes block, which must start with d.Begin and end with d.End,
// into the Markdown file at path: in place of the marked section if the
// file has one, else at the end of the file (under d.Heading), or into a new
// file made from d.NewDoc if there is none. It creates the file's directory
// if need be. A file with only one marker, or with the end before the
// beginning, is an error and is left alone.
func (d DocSection) Update(path, block string) error {
	if !strings.HasPrefix(block, d.Begin) || !strings.HasSuffix(block, d.End) {
		return fmt.Errorf("bench: the section for %s must start with %s and end with %s", path, d.Begin, d.End)
	}
	old, err := os.ReadFile(path)
	s := string(old)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s = d.NewDoc
	case err != nil:
		return err
	}
	i, j := strings.Index(s, d.Begin), strings.Index(s, d.End)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(d.End):]
	case i < 0 && j < 0:
		if s = strings.TrimRight(s, "\n"); s != "" {
			s += "\n\n"
		}
		if d.Heading != "" {
			s += d.Heading + "\n\n"
		}
		s += block + "\n"
	default:
		return fmt.Errorf("bench: %s: unbalanced %s / %s markers", path, d.Begin, d.End)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// WriteChart writes chart to the file svg, creating its directory, and
// returns how the Markdown document doc should link to it: the path
// relative to doc's directory, or svg itself if doc is "" or no relative
// path exists.
func WriteChart(svg, doc string, chart []byte) (string, error) {
	if err := os.MkdirAll(filepath.Dir(svg), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(svg, chart, 0o644); err != nil {
		return "", err
	}
	if doc != "" {
		if rel, err := filepath.Rel(filepath.Dir(doc), svg); err == nil {
			return filepath.ToSlash(rel), nil
		}
	}
	return svg, nil
}
