package dlp

// automaton is an Aho-Corasick automaton over exact byte strings, compiled
// to a dense DFA over byte classes: every byte that appears in no keyword
// shares class 0, so a table row has as many entries as the keywords have
// distinct bytes plus one.
type automaton struct {
	class  [256]uint8
	first  [256]bool // bytes that leave the root state
	nclass int
	delta  []int32   // state*nclass + class -> next state
	out    [][]int32 // state -> keyword ids ending here (including via failure links)
	maxLen int
}

func newAutomaton(keywords []string) *automaton {
	a := &automaton{}
	next := int(1)
	for _, kw := range keywords {
		for i := 0; i < len(kw); i++ {
			if a.class[kw[i]] == 0 {
				a.class[kw[i]] = uint8(next)
				next++
			}
		}
		a.maxLen = max(a.maxLen, len(kw))
	}
	a.nclass = next
	// Trie.
	type node struct{ next map[int]int32 }
	trie := []node{{next: map[int]int32{}}}
	a.out = [][]int32{nil}
	for id, kw := range keywords {
		s := int32(0)
		for i := 0; i < len(kw); i++ {
			c := int(a.class[kw[i]])
			n, ok := trie[s].next[c]
			if !ok {
				n = int32(len(trie))
				trie = append(trie, node{next: map[int]int32{}})
				a.out = append(a.out, nil)
				trie[s].next[c] = n
			}
			s = n
		}
		a.out[s] = append(a.out[s], int32(id))
	}
	// Breadth-first: failure links folded into a full transition table.
	a.delta = make([]int32, len(trie)*a.nclass)
	fail := make([]int32, len(trie))
	queue := make([]int32, 0, len(trie))
	for c := 0; c < a.nclass; c++ {
		if n, ok := trie[0].next[c]; ok {
			a.delta[c] = n
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		a.out[s] = append(a.out[s], a.out[fail[s]]...)
		for c := 0; c < a.nclass; c++ {
			if n, ok := trie[s].next[c]; ok {
				fail[n] = a.delta[int(fail[s])*a.nclass+c]
				a.delta[int(s)*a.nclass+c] = n
				queue = append(queue, n)
			} else {
				a.delta[int(s)*a.nclass+c] = a.delta[int(fail[s])*a.nclass+c]
			}
		}
	}
	for c := 0; c < 256; c++ {
		a.first[c] = a.delta[a.class[c]] != 0
	}
	return a
}
