package httpcache

import (
	"strings"
	"time"
)

// parseHTTPDate parses an HTTP-date (RFC 9110 section 5.6.7) in any of its
// three forms: IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete
// RFC 850 form ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6
// 08:49:37 1994"). The layout is strict (fixed widths, single spaces, the
// comma, two-digit hours), unlike time.Parse, which takes one-digit hours;
// names (day, month, "GMT") are matched without regard to case, as the
// cache tests' "optimal" cases expect. The weekday is not checked against
// the date.
func parseHTTPDate(s string) (time.Time, bool) {
	if i := strings.IndexByte(s, ','); i >= 0 {
		day := s[:i]
		rest := s[i+1:]
		if len(day) == 3 && dayIndex(day) >= 0 {
			return parseIMF(rest)
		}
		if dayLongIndex(day) >= 0 {
			return parseRFC850(rest)
		}
		return time.Time{}, false
	}
	return parseASCTime(s)
}

// parseIMF parses " 06 Nov 1994 08:49:37 GMT".
func parseIMF(s string) (time.Time, bool) {
	if len(s) != 25 || s[0] != ' ' || s[3] != ' ' || s[7] != ' ' || s[12] != ' ' || s[21] != ' ' ||
		!strings.EqualFold(s[22:], "GMT") {
		return time.Time{}, false
	}
	day, ok1 := digits(s[1:3])
	mon := monthIndex(s[4:7])
	year, ok2 := digits(s[8:12])
	if !ok1 || !ok2 || mon < 0 {
		return time.Time{}, false
	}
	return build(year, mon, day, s[13:21])
}

// parseRFC850 parses " 06-Nov-94 08:49:37 GMT". A two-digit year more than
// 50 years in the future is taken as the most recent past year with those
// digits (RFC 9110 section 5.6.7).
func parseRFC850(s string) (time.Time, bool) {
	if len(s) != 23 || s[0] != ' ' || s[3] != '-' || s[7] != '-' || s[10] != ' ' || s[19] != ' ' ||
		!strings.EqualFold(s[20:], "GMT") {
		return time.Time{}, false
	}
	day, ok1 := digits(s[1:3])
	mon := monthIndex(s[4:7])
	yy, ok2 := digits(s[8:10])
	if !ok1 || !ok2 || mon < 0 {
		return time.Time{}, false
	}
	now := time.Now().UTC().Year()
	year := now - now%100 + yy
	if year > now+50 {
		year -= 100
	}
	return build(year, mon, day, s[11:19])
}

// parseASCTime parses "Sun Nov  6 08:49:37 1994" (a space-padded day).
func parseASCTime(s string) (time.Time, bool) {
	if len(s) != 24 || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' || dayIndex(s[:3]) < 0 {
		return time.Time{}, false
	}
	mon := monthIndex(s[4:7])
	var day int
	var ok bool
	if s[8] == ' ' {
		day, ok = digits(s[9:10])
	} else {
		day, ok = digits(s[8:10])
	}
	year, ok2 := digits(s[20:24])
	if !ok || !ok2 || mon < 0 {
		return time.Time{}, false
	}
	return build(year, mon, day, s[11:19])
}

// build checks the ranges and the "08:49:37" clock, and makes the time.
func build(year, mon, day int, clock string) (time.Time, bool) {
	if len(clock) != 8 || clock[2] != ':' || clock[5] != ':' {
		return time.Time{}, false
	}
	h, ok1 := digits(clock[0:2])
	m, ok2 := digits(clock[3:5])
	sec, ok3 := digits(clock[6:8])
	if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || sec > 60 || day < 1 {
		return time.Time{}, false
	}
	if sec == 60 { // a leap second: time.Date would normalize into the next minute anyway
		sec = 59
	}
	t := time.Date(year, time.Month(mon+1), day, h, m, sec, 0, time.UTC)
	if t.Day() != day { // 31 Feb and friends
		return time.Time{}, false
	}
	return t, true
}

func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

var (
	days     = [...]string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	daysLong = [...]string{"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
	months   = [...]string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
)

func dayIndex(s string) int     { return foldIndex(days[:], s) }
func dayLongIndex(s string) int { return foldIndex(daysLong[:], s) }
func monthIndex(s string) int   { return foldIndex(months[:], s) }

func foldIndex(list []string, s string) int {
	for i, v := range list {
		if strings.EqualFold(v, s) {
			return i
		}
	}
	return -1
}

// appendHTTPDate appends t in IMF-fixdate form.
func appendHTTPDate(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "Mon, 02 Jan 2006 15:04:05 GMT")
}
