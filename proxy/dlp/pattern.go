package dlp

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
)

// Custom patterns are RE2 regular expressions. The prefilter needs a
// literal to look for, so a pattern must start with at least
// minPatternLiteral literal characters (case-insensitive literals count:
// their case variants become keywords). A match is at most maxPatternMatch
// bytes long.
const (
	minPatternLiteral = 3
	maxPatternMatch   = 1024
	maxFoldVariants   = 64
)

// compilePattern builds the detector for a custom pattern.
func compilePattern(name, expr string) (detector, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return detector{}, fmt.Errorf("bad regex: %v", err)
	}
	prefix, fold := literalPrefix(re.Simplify())
	if utf8.RuneCountInString(prefix) < minPatternLiteral {
		return detector{}, fmt.Errorf("must start with at least %d literal characters (the prefilter looks for them), e.g. \"ACME-[0-9]{8}\"", minPatternLiteral)
	}
	anchored, err := regexp.Compile(`^(?:` + expr + `)`)
	if err != nil {
		return detector{}, fmt.Errorf("bad regex: %v", err)
	}
	kws := []string{prefix}
	if fold {
		kws = foldVariants(prefix)
		if kws == nil {
			return detector{}, errors.New("case-insensitive literal start has too many case variants: start with a shorter or case-sensitive literal")
		}
	}
	verify := func(w []byte, i, kw int, eof bool) (int, result) {
		end := i + maxPatternMatch
		if end > len(w) {
			if !eof {
				return 0, needMore
			}
			end = len(w)
		}
		if anchored.Match(w[i:end]) {
			return i, matched
		}
		return 0, noMatch
	}
	return detector{name: name, keywords: kws, lookahead: maxPatternMatch, verify: verify}, nil
}

// literalPrefix returns the literal a match must start with, and whether
// it is matched case-insensitively.
func literalPrefix(re *syntax.Regexp) (string, bool) {
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	switch re.Op {
	case syntax.OpLiteral:
		return string(re.Rune), re.Flags&syntax.FoldCase != 0
	case syntax.OpConcat:
		var s []rune
		fold := false
		for k, sub := range re.Sub {
			for sub.Op == syntax.OpCapture {
				sub = sub.Sub[0]
			}
			if sub.Op != syntax.OpLiteral {
				break
			}
			f := sub.Flags&syntax.FoldCase != 0
			if k > 0 && f != fold {
				break
			}
			fold = f
			s = append(s, sub.Rune...)
		}
		return string(s), fold
	}
	return "", false
}

// foldVariants spells every case variant of the first letters of s (up to
// minPatternLiteral+3 letters: the verifier checks the rest).
func foldVariants(s string) []string {
	runes := []rune(s)
	if len(runes) > minPatternLiteral+3 {
		runes = runes[:minPatternLiteral+3]
	}
	out := []string{""}
	for _, r := range runes {
		var alts []rune
		for f := r; ; {
			alts = append(alts, f)
			if f = unicode.SimpleFold(f); f == r {
				break
			}
		}
		var next []string
		for _, p := range out {
			for _, a := range alts {
				next = append(next, p+string(a))
			}
		}
		if len(next) > maxFoldVariants {
			return nil
		}
		out = next
	}
	return out
}

// PatternConfig is one custom pattern of a profile.
type PatternConfig struct {
	Name  string
	Regex string
}

// compileMatcher builds a Matcher from built-in detector names and custom
// patterns. Names are checked by Compile; here an unknown one is an error.
func compileMatcher(names []string, patterns []PatternConfig) (*Matcher, error) {
	var dets []detector
	cards, ssn := false, false
	for _, n := range names {
		switch n {
		case DetectorCardNumber:
			cards = true
			continue
		case DetectorUSSSN:
			ssn = true
			continue
		}
		d, ok := builtin(n)
		if !ok {
			return nil, fmt.Errorf("%q: unknown detector", n)
		}
		dets = append(dets, d)
	}
	for _, p := range patterns {
		d, err := compilePattern(p.Name, p.Regex)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		dets = append(dets, d)
	}
	return newMatcher(dets, cards, ssn), nil
}
