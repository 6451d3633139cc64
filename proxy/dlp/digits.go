package dlp

// Card numbers and US SSNs are found from runs of digits: every digit that
// follows a non-digit starts a candidate, and verifyDigits reads the token
// (digit groups joined by one kind of separator, a space or a dash) and
// checks its shape.

// digitsLookahead covers the longest token judged (19 digits and 4
// separators) plus the bytes after it that decide its end.
const digitsLookahead = 19 + 4 + 3

// verifyDigits returns the detector a digit token matches: DetectorCardNumber,
// DetectorUSSSN, or "".
func verifyDigits(w []byte, i int, eof bool) (string, result) {
	// The token must start here: not inside a word, a decimal, or a
	// longer separated token (whose own start is the candidate).
	if i > 0 {
		p := w[i-1]
		if isAlnum(p) || p == '_' {
			return "", noMatch
		}
		if (p == '.' || p == ',' || p == ' ' || p == '-' || p == '/' || p == ':') && i > 1 && isDigit(w[i-2]) {
			return "", noMatch
		}
	}
	var groups [8]int
	ng, digits := 0, 0
	var sep byte
	j := i
	for {
		n, more := run(w, j, 20, isDigit, eof)
		if more {
			return "", needMore
		}
		if ng == len(groups) || digits+n > 19 {
			return "", noMatch
		}
		groups[ng] = n
		ng++
		digits += n
		j += n
		if j >= len(w) {
			if !eof {
				return "", needMore
			}
			break
		}
		c := w[j]
		if c != ' ' && c != '-' || (sep != 0 && c != sep) {
			break
		}
		if j+1 >= len(w) {
			if !eof {
				return "", needMore
			}
			break
		}
		if !isDigit(w[j+1]) {
			break
		}
		sep = c
		j++
	}
	// The byte after the token: not a letter or digit, not a decimal point
	// or another kind of separator followed by a digit.
	if j < len(w) {
		c := w[j]
		if isAlnum(c) || c == '_' {
			return "", noMatch
		}
		if c == '.' || c == ',' || c == ' ' || c == '-' || c == '/' || c == ':' {
			if j+1 >= len(w) {
				if !eof {
					return "", needMore
				}
			} else if isDigit(w[j+1]) {
				return "", noMatch
			}
		}
	}
	g := groups[:ng]
	if sep != 0 && ng == 3 && g[0] == 3 && g[1] == 2 && g[2] == 4 {
		if validSSN(w[i:j], sep) {
			return DetectorUSSSN, matched
		}
		return "", noMatch
	}
	if digits < 13 || !cardShape(g, sep != 0) {
		return "", noMatch
	}
	var num [19]byte
	k := 0
	for _, b := range w[i:j] {
		if isDigit(b) {
			num[k] = b - '0'
			k++
		}
	}
	if validCard(num[:k], sep != 0) {
		return DetectorCardNumber, matched
	}
	return "", noMatch
}

// cardShape accepts one unbroken number or the groupings cards are printed
// in: 4-4-4-4, 4-4-4-4-3, 4-6-5 (Amex), 4-6-4 (Diners).
func cardShape(g []int, separated bool) bool {
	if !separated {
		return len(g) == 1
	}
	eq := func(want ...int) bool {
		if len(g) != len(want) {
			return false
		}
		for k := range want {
			if g[k] != want[k] {
				return false
			}
		}
		return true
	}
	return eq(4, 4, 4, 4) || eq(4, 4, 4, 4, 3) || eq(4, 6, 5) || eq(4, 6, 4)
}

// validCard checks the issuer prefix and length of the major networks and
// the Luhn checksum. 19-digit numbers count only when printed in groups:
// unbroken, they are more often 64-bit ids (trace ids, snowflakes).
func validCard(d []byte, separated bool) bool {
	n := len(d)
	if n == 19 && !separated {
		return false
	}
	p2 := int(d[0])*10 + int(d[1])
	p3 := p2*10 + int(d[2])
	p4 := p3*10 + int(d[3])
	ok := false
	switch {
	case d[0] == 4: // Visa
		ok = n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
		ok = n == 16
	case p2 == 34 || p2 == 37: // American Express
		ok = n == 15
	case p4 == 6011, p2 == 65, p3 >= 644 && p3 <= 649: // Discover
		ok = n == 16 || n == 19
	case p4 >= 3528 && p4 <= 3589: // JCB
		ok = n == 16 || n == 19
	case p3 >= 300 && p3 <= 305, p2 == 36, p2 == 38, p2 == 39: // Diners Club
		ok = n == 14 || n == 16
	case p2 == 62: // UnionPay
		ok = n == 16 || n == 19
	}
	return ok && luhn(d)
}

func luhn(d []byte) bool {
	sum := 0
	double := false
	for k := len(d) - 1; k >= 0; k-- {
		v := int(d[k])
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

// validSSN applies the SSA's rules: area 001-899 but not 666, group 01-99,
// serial 0001-9999; and leaves out numbers published as examples.
func validSSN(tok []byte, sep byte) bool {
	num := func(b []byte) int {
		v := 0
		for _, c := range b {
			v = v*10 + int(c-'0')
		}
		return v
	}
	area, group, serial := num(tok[0:3]), num(tok[4:6]), num(tok[7:11])
	if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
		return false
	}
	switch area*1000000 + group*10000 + serial {
	case 78051120, 219099999, 123456789: // Woolworth's wallet card, an SSA ad, the classic placeholder
		return false
	}
	return true
}
