package picker

import (
	"math"
	"testing"
	"time"
)

// Every way out of set and fold releases the estimate's lock (the stamp's
// low bit), and a held lock makes them give way instead of waiting.
func TestEstimateLock(t *testing.T) {
	p := LeastLoaded().(*leastLoaded)
	for _, tc := range []struct {
		name string
		run  func(s *nodeState)
	}{
		{"first sample", func(s *nodeState) { p.set(s, 1e6, true) }},
		{"peak", func(s *nodeState) { p.set(s, 1e6, true); p.set(s, 2e6, true) }},
		{"not a peak after all", func(s *nodeState) { p.set(s, 2e6, true); p.set(s, 1e6, true) }},
		{"fold", func(s *nodeState) { p.set(s, 1e6, true); s.batch.Add(uint64(5e5)<<countBits | 1); p.fold(s) }},
		{"fold of an empty batch", func(s *nodeState) { p.set(s, 1e6, true); p.fold(s) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := p.fresh("a")
			tc.run(s)
			if st := s.stamp.Load(); st&1 != 0 {
				t.Fatalf("stamp %d left locked", st)
			}
			if _, ok := s.lockEstimate(); !ok {
				t.Fatal("lock not free")
			}
		})
	}

	t.Run("held", func(t *testing.T) {
		s := p.fresh("a")
		p.set(s, 1e6, true)
		st, ok := s.lockEstimate()
		if !ok {
			t.Fatal("lock not free")
		}
		if _, again := s.lockEstimate(); again {
			t.Fatal("lock taken twice")
		}
		before := s.ewma.Load()
		p.set(s, float64(time.Second), true) // a peak, but the lock is held: batched
		p.fold(s)                            // gives way: the batch stays
		if s.ewma.Load() != before || s.batch.Load()&countMask != 1 {
			t.Fatalf("estimate changed or batch of %d samples; want the peak batched, the estimate untouched", s.batch.Load()&countMask)
		}
		s.stamp.Store(st)
		p.fold(s)
		if n := s.batch.Load() & countMask; n != 0 {
			t.Fatalf("%d samples left after a free fold", n)
		}
	})
}

// While a Done holding the estimate is held up, further samples fill the
// batch but never wrap its count, and the fold after it is sane.
func TestBatchDoesNotWrap(t *testing.T) {
	p := LeastLoaded().(*leastLoaded)
	s := p.fresh("a")
	p.observe(s, answered, time.Millisecond) // the first sample sets the estimate
	st, ok := s.lockEstimate()
	if !ok {
		t.Fatal("lock not free")
	}
	for range 1000 {
		p.observe(s, answered, time.Millisecond/2)
	}
	b := s.batch.Load()
	n := b & countMask
	if n < foldEvery {
		t.Fatalf("batch count %d with the estimate held, want at least %d", n, foldEvery)
	}
	// A wrapped count would have carried into the sum: the mean of equal
	// samples would not be the sample.
	if mean := (b >> countBits) / n; mean != uint64(time.Millisecond/2) {
		t.Fatalf("batch mean %dns over %d samples, want %d: the count wrapped", mean, n, time.Millisecond/2)
	}
	s.stamp.Store(st)
	p.fold(s)
	if e := time.Duration(math.Float64frombits(s.ewma.Load())); e < time.Millisecond/2 || e > time.Millisecond {
		t.Fatalf("estimate %v after the fold, want between the samples (0.5ms) and the first (1ms)", e)
	}
}

// Peaks that arrive while another Done holds the estimate join the batch
// (see set) under the same guard as other samples (TestBatchDoesNotWrap):
// the 8-bit count never wraps, so the fold's mean is the samples'.
func TestBatchPeaksWhileHeldDoNotWrap(t *testing.T) {
	p := LeastLoaded().(*leastLoaded)
	var clock int64
	p.now = func() int64 { return clock }
	s := p.fresh("a")
	p.observe(s, answered, time.Millisecond) // estimate 1ms
	st, ok := s.lockEstimate()               // a Done holding the estimate is preempted
	if !ok {
		t.Fatal("lock not free")
	}
	for range 1000 {
		p.observe(s, answered, 2*time.Millisecond) // peaks: the node slows down
	}
	b := s.batch.Load()
	if n := b & countMask; n == 0 || (b>>countBits)/n != uint64(2*time.Millisecond) {
		t.Errorf("batch: %d samples, sum %dns: count wrapped (mean should be 2ms)", n, b>>countBits)
	}
	s.stamp.Store(st)
	clock += p.tau // the fold weighs the batch by the time since the last change
	p.fold(s)
	if e := time.Duration(math.Float64frombits(s.ewma.Load())); e > 2*time.Millisecond {
		t.Fatalf("estimate %v after the fold, want at most the samples' 2ms", e)
	}
}

// Once a batch fills while a Done holds the estimate (TestBatchDoesNotWrap's
// scenario), the estimate must still learn after the holder lets go: a node
// that then fails (failures fold at once) must not keep its old, fast
// estimate forever.
func TestBatchFullStillFolds(t *testing.T) {
	p := LeastLoaded().(*leastLoaded)
	var clock int64
	p.now = func() int64 { return clock }
	s := p.fresh("a")
	p.observe(s, answered, time.Millisecond) // estimate 1ms
	st, ok := s.lockEstimate()               // a Done holding the estimate is preempted
	if !ok {
		t.Fatal("lock not free")
	}
	for range 1000 {
		p.observe(s, answered, time.Millisecond/2) // fills the batch
	}
	s.stamp.Store(st) // the held-up Done resumes and lets go

	// The node now fails, fast, for a long while.
	for range 10000 {
		clock += int64(time.Millisecond)
		p.observe(s, failed, time.Microsecond)
	}
	e := time.Duration(math.Float64frombits(s.ewma.Load()))
	if e <= time.Millisecond {
		t.Fatalf("estimate still %v after 10,000 failures over 10s (error penalty 1s); batch holds %d samples and never folds again",
			e, s.batch.Load()&countMask)
	}
}
