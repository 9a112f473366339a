package bench

import "github.com/lbrpc/lbrpc/picker"

// FullChainPicker is the picker of the lbrpc-full client: LeastLoaded (P2C
// peak-EWMA), with its defaults.
//
// SWITCH (issue 5): LeastLoaded was written in parallel with this harness.
// To measure the full chain on a tree without it, return picker.RoundRobin()
// here and say so in FullChainPickerName.
func FullChainPicker() picker.Picker { return picker.LeastLoaded() }

// FullChainPickerName names FullChainPicker in the report.
const FullChainPickerName = "`picker.LeastLoaded()` (P2C peak-EWMA, defaults)"
