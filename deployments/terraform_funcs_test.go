package deployments

import (
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// tfFunctions are the Terraform functions the modules' validations, locals
// and outputs use, so that the tests can evaluate them: cty's standard
// library where it has Terraform's semantics, and small implementations of
// Terraform's own (cidrhost, cidrsubnet, startswith, alltrue, ...).
func tfFunctions() map[string]function.Function {
	strPred := func(f func(s, arg string) bool) function.Function {
		return function.New(&function.Spec{
			Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "arg", Type: cty.String}},
			Type:   function.StaticReturnType(cty.Bool),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
			},
		})
	}
	boolFold := func(all bool) function.Function {
		return function.New(&function.Spec{
			Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
			Type:   function.StaticReturnType(cty.Bool),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				for _, v := range args[0].AsValueSlice() {
					if v.IsNull() {
						return cty.NilVal, fmt.Errorf("null element")
					}
					if v.True() != all {
						return cty.BoolVal(!all), nil
					}
				}
				return cty.BoolVal(all), nil
			},
		})
	}
	to := func(ty cty.Type) function.Function {
		return function.New(&function.Spec{
			Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType, AllowNull: true}},
			Type: func(args []cty.Value) (cty.Type, error) {
				if !ty.HasDynamicTypes() {
					return ty, nil
				}
				v, err := convert.Convert(args[0], ty)
				if err != nil {
					return cty.NilType, err
				}
				return v.Type(), nil
			},
			Impl: func(args []cty.Value, ret cty.Type) (cty.Value, error) {
				return convert.Convert(args[0], ret)
			},
		})
	}
	return map[string]function.Function{
		"abspath":     abspathFunc,
		"alltrue":     boolFold(true),
		"anytrue":     boolFold(false),
		"can":         tryfunc.CanFunc,
		"ceil":        stdlib.CeilFunc,
		"cidrhost":    cidrHostFunc,
		"cidrsubnet":  cidrSubnetFunc,
		"coalesce":    coalesceFunc,
		"compact":     compactFunc,
		"concat":      stdlib.ConcatFunc,
		"contains":    stdlib.ContainsFunc,
		"distinct":    stdlib.DistinctFunc,
		"endswith":    strPred(strings.HasSuffix),
		"file":        fileFunc,
		"flatten":     stdlib.FlattenFunc,
		"floor":       stdlib.FloorFunc,
		"format":      stdlib.FormatFunc,
		"join":        stdlib.JoinFunc,
		"jsonencode":  stdlib.JSONEncodeFunc,
		"keys":        stdlib.KeysFunc,
		"length":      stdlib.LengthFunc,
		"lookup":      stdlib.LookupFunc,
		"max":         stdlib.MaxFunc,
		"merge":       stdlib.MergeFunc,
		"min":         stdlib.MinFunc,
		"regex":       stdlib.RegexFunc,
		"replace":     stdlib.ReplaceFunc,
		"setproduct":  stdlib.SetProductFunc,
		"sort":        stdlib.SortFunc,
		"split":       stdlib.SplitFunc,
		"startswith":  strPred(strings.HasPrefix),
		"strcontains": strPred(strings.Contains),
		"tolist":      to(cty.List(cty.DynamicPseudoType)),
		"tonumber":    to(cty.Number),
		"toset":       to(cty.Set(cty.DynamicPseudoType)),
		"tostring":    to(cty.String),
		"trimprefix":  stdlib.TrimPrefixFunc,
		"try":         tryfunc.TryFunc,
		"upper":       stdlib.UpperFunc,
		"values":      stdlib.ValuesFunc,
	}
}

// abspathFunc is Terraform's abspath.
var abspathFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := filepath.Abs(args[0].AsString())
		return cty.StringVal(p), err
	},
})

// coalesceFunc is Terraform's coalesce: the first argument that is neither
// null nor an empty string, and an error when there is none (unlike cty's,
// which returns an empty string).
var coalesceFunc = function.New(&function.Spec{
	VarParam: &function.Parameter{Name: "vals", Type: cty.DynamicPseudoType, AllowNull: true, AllowDynamicType: true},
	Type: func(args []cty.Value) (cty.Type, error) {
		types := make([]cty.Type, len(args))
		for i, a := range args {
			types[i] = a.Type()
		}
		ty, _ := convert.UnifyUnsafe(types)
		if ty == cty.NilType {
			return cty.NilType, fmt.Errorf("all arguments must have the same type")
		}
		return ty, nil
	},
	Impl: func(args []cty.Value, ret cty.Type) (cty.Value, error) {
		for _, a := range args {
			v, err := convert.Convert(a, ret)
			if err != nil {
				return cty.NilVal, err
			}
			if v.IsNull() || (v.Type() == cty.String && v.AsString() == "") {
				continue
			}
			return v, nil
		}
		return cty.NilVal, fmt.Errorf("no non-null, non-empty-string arguments")
	},
})

// fileFunc is Terraform's file, relative to the tests' directory (path.module
// is given as the module's directory under deployments/).
var fileFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		data, err := os.ReadFile(args[0].AsString())
		return cty.StringVal(string(data)), err
	},
})

// compactFunc is Terraform's compact: a list of strings without the empty
// and null ones.
var compactFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.String)}},
	Type:   function.StaticReturnType(cty.List(cty.String)),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		var out []cty.Value
		for _, v := range args[0].AsValueSlice() {
			if !v.IsNull() && v.AsString() != "" {
				out = append(out, v)
			}
		}
		if len(out) == 0 {
			return cty.ListValEmpty(cty.String), nil
		}
		return cty.ListVal(out), nil
	},
})

// cidrHostFunc is Terraform's cidrhost(prefix, hostnum): the prefix's
// network address (host bits cleared) plus hostnum.
var cidrHostFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "hostnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := netip.ParsePrefix(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		host, acc := args[1].AsBigFloat().Int(nil)
		if acc != big.Exact || host.Sign() < 0 {
			return cty.NilVal, fmt.Errorf("hostnum must be a non-negative integer")
		}
		hostBits := p.Addr().BitLen() - p.Bits()
		if host.BitLen() > hostBits {
			return cty.NilVal, fmt.Errorf("prefix %s has no host %s", p, host)
		}
		return cty.StringVal(addToAddr(p.Masked().Addr(), host).String()), nil
	},
})

// cidrSubnetFunc is Terraform's cidrsubnet(prefix, newbits, netnum).
var cidrSubnetFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "newbits", Type: cty.Number}, {Name: "netnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := netip.ParsePrefix(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		newbits, _ := args[1].AsBigFloat().Int64()
		netnum, acc := args[2].AsBigFloat().Int(nil)
		if acc != big.Exact || netnum.Sign() < 0 || newbits < 0 {
			return cty.NilVal, fmt.Errorf("newbits and netnum must be non-negative integers")
		}
		bits := p.Bits() + int(newbits)
		total := p.Addr().BitLen()
		if bits > total || netnum.BitLen() > int(newbits) {
			return cty.NilVal, fmt.Errorf("cannot make subnet %s of %s with %d new bits", netnum, p, newbits)
		}
		offset := new(big.Int).Lsh(netnum, uint(total-bits))
		return cty.StringVal(netip.PrefixFrom(addToAddr(p.Masked().Addr(), offset), bits).String()), nil
	},
})

func addToAddr(a netip.Addr, n *big.Int) netip.Addr {
	b := a.AsSlice()
	sum := new(big.Int).Add(new(big.Int).SetBytes(b), n)
	out := sum.FillBytes(make([]byte, len(b)))
	addr, _ := netip.AddrFromSlice(out)
	return addr
}
