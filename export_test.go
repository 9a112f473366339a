package lbrpc

// WithClock sets the clock of outlier ejections and slow start, so that
// tests run them in virtual time.
var WithClock = withClock
