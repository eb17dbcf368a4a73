package pricing

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// offPeak is a model's off-peak prices (LiteLLM's off_peak_pricing, as
// DeepSeek bills): while one of its windows is open at a call's time, its
// rates replace the standard ones, of whichever tier the call is in.
type offPeak struct {
	input, output, cacheRead, cacheWrite, reasoning *float64 // per million; nil keeps the standard rate
	rules                                           []offPeakRule
	weekdayZone                                     *time.Location // the calendar weekdays are read in
}

// offPeakRule is a set of daily windows, on some weekdays.
type offPeakRule struct {
	weekdays uint8    // bit d (1 = Monday ... 7 = Sunday); 0 = every day
	windows  [][2]int // [start, end) in minutes of the UTC day; start == end is the whole day
}

// open reports whether at falls in one of the windows.
func (o *offPeak) open(at time.Time) bool {
	utc := at.UTC()
	minute := utc.Hour()*60 + utc.Minute()
	wd := int(at.In(o.weekdayZone).Weekday())
	if wd == 0 {
		wd = 7 // ISO: Sunday is 7
	}
	for _, r := range o.rules {
		if r.weekdays != 0 && r.weekdays&(1<<wd) == 0 {
			continue
		}
		for _, w := range r.windows {
			start, end := w[0], w[1]
			switch {
			case start == end:
				return true
			case start < end && minute >= start && minute < end:
				return true
			case start > end && (minute >= start || minute < end):
				return true
			}
		}
	}
	return false
}

// apply returns r with the off-peak rates in place. A 1-hour cache write
// price that follows the write price (no price of its own) follows the
// off-peak one too.
func (o *offPeak) apply(r Rates) Rates {
	set := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	followsWrite := r.CacheWrite1h == r.CacheWrite
	set(&r.Input, o.input)
	set(&r.Output, o.output)
	set(&r.CacheRead, o.cacheRead)
	set(&r.CacheWrite, o.cacheWrite)
	set(&r.Reasoning, o.reasoning)
	if followsWrite {
		r.CacheWrite1h = r.CacheWrite
	}
	return r
}

func sameOffPeak(a, b *offPeak) bool { return a == b || reflect.DeepEqual(a, b) }

// liteLLMOffPeak reads off_peak_pricing. modelReasoning is the entry's own
// output_cost_per_reasoning_token: without one, reasoning follows the
// off-peak output price, as litellm bills it.
func liteLLMOffPeak(raw json.RawMessage, modelReasoning *float64) (*offPeak, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, errors.New("must be an object")
	}
	o := &offPeak{weekdayZone: time.UTC}
	var bad []string
	get := func(k string) *float64 {
		v, msg := jsonRate(f[k])
		if msg != "" {
			bad = append(bad, k+": "+msg)
		}
		if v != nil {
			pm := perMillion(*v)
			return &pm
		}
		return nil
	}
	o.input, o.output = get("input_cost_per_token"), get("output_cost_per_token")
	o.cacheRead, o.cacheWrite = get("cache_read_input_token_cost"), get("cache_creation_input_token_cost")
	o.reasoning = get("output_cost_per_reasoning_token")
	if o.reasoning == nil && modelReasoning == nil {
		o.reasoning = o.output
	}
	if len(bad) > 0 {
		return nil, errors.New(strings.Join(bad, "; "))
	}
	if raw, ok := f["weekday_timezone"]; ok {
		var name string
		if json.Unmarshal(raw, &name) == nil && strings.TrimSpace(name) != "" {
			if loc, err := time.LoadLocation(strings.TrimSpace(name)); err == nil {
				o.weekdayZone = loc
			} // as litellm: an unknown zone reads weekdays in UTC
		}
	}
	if raw, ok := f["hours_utc"]; ok {
		w, err := offPeakWindows(raw)
		if err != nil {
			return nil, fmt.Errorf("hours_utc: %w", err)
		}
		o.rules = append(o.rules, offPeakRule{windows: w})
	}
	if raw, ok := f["windows"]; ok {
		var rules []struct {
			HoursUTC json.RawMessage   `json:"hours_utc"`
			Weekdays []json.RawMessage `json:"weekdays"`
		}
		if err := json.Unmarshal(raw, &rules); err != nil {
			return nil, errors.New("windows: must be a list of {hours_utc, weekdays}")
		}
		for i, r := range rules {
			w, err := offPeakWindows(r.HoursUTC)
			if err != nil {
				return nil, fmt.Errorf("windows[%d].hours_utc: %w", i, err)
			}
			rule := offPeakRule{windows: w}
			for _, d := range r.Weekdays {
				n, ok := weekday(d)
				if !ok {
					return nil, fmt.Errorf("windows[%d].weekdays: %s is not a weekday", i, d)
				}
				rule.weekdays |= 1 << n
			}
			if r.Weekdays != nil && rule.weekdays == 0 {
				continue // no day: never open
			}
			o.rules = append(o.rules, rule)
		}
	}
	if len(o.rules) == 0 {
		return nil, errors.New("no window")
	}
	return o, nil
}

var weekdayNames = map[string]int{"mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3,
	"thu": 4, "thur": 4, "thurs": 4, "thursday": 4, "fri": 5, "friday": 5, "sat": 6, "saturday": 6, "sun": 7, "sunday": 7}

func weekday(raw json.RawMessage) (int, bool) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n, n >= 1 && n <= 7
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, ok := weekdayNames[strings.ToLower(strings.TrimSpace(s))]
		return n, ok
	}
	return 0, false
}

// offPeakWindows reads "HH:MM-HH:MM" or a list of them, in UTC.
func offPeakWindows(raw json.RawMessage) ([][2]int, error) {
	var list []string
	var one string
	if json.Unmarshal(raw, &one) == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errors.New(`must be "HH:MM-HH:MM" or a list of them`)
	}
	var out [][2]int
	for _, w := range list {
		a, b, ok := strings.Cut(w, "-")
		start, ok1 := clock(a)
		end, ok2 := clock(b)
		if !ok || !ok1 || !ok2 {
			return nil, fmt.Errorf("%q is not HH:MM-HH:MM", w)
		}
		out = append(out, [2]int{start, end})
	}
	if len(out) == 0 {
		return nil, errors.New("no window")
	}
	return out, nil
}

func clock(s string) (int, bool) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}
