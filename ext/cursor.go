package ext

import (
	"fmt"
	"unicode/utf8"
)

// cursor is the read position shared by the SCALE and MessagePack readers:
// bounds-checked slicing, with errors that carry the offset and the field
// being read.
type cursor struct {
	b   []byte
	off int
}

func (c *cursor) errorf(what, format string, args ...any) error {
	return fmt.Errorf("offset %d: %s: %s", c.off, what, fmt.Sprintf(format, args...))
}

func (c *cursor) remaining() int { return len(c.b) - c.off }

// next returns the next n bytes (a sub-slice of the input, not a copy).
func (c *cursor) next(n int, what string) ([]byte, error) {
	if n < 0 || n > c.remaining() {
		return nil, c.errorf(what, "need %d bytes, have %d", n, c.remaining())
	}
	s := c.b[c.off : c.off+n]
	c.off += n
	return s, nil
}

// text returns b, read from offset start, as a string if it is valid UTF-8,
// which Rust's String (and so dstack) requires.
func (c *cursor) text(b []byte, start int, what string) (string, error) {
	if !utf8.Valid(b) {
		c.off = start
		return "", c.errorf(what, "string is not valid UTF-8")
	}
	return string(b), nil
}
