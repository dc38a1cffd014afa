//! The stable diagnostic codes and their long explanations (printed by `spreadc explain CODE`).
//!
//! In: nothing. Out: the `Code` enum, its text form (`E0201`) and explanation.
//! Guarantees: a code, once published, keeps its number and meaning; new codes get new numbers.

macro_rules! codes {
    ($($name:ident => $title:literal, $text:literal;)*) => {
        /// A stable diagnostic code: E01xx syntax, E02xx names and modules, E03xx types and shapes,
        /// E04xx plates and data flow, E05xx data sources, E06xx constants, variants, flows and guides.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($name,)* }

        impl Code {
            /// Every code, in number order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as written in diagnostics, e.g. `E0201`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => stringify!($name),)* }
            }

            /// A one-line title.
            pub fn title(self) -> &'static str {
                match self { $(Code::$name => $title,)* }
            }

            /// The long explanation with an example.
            pub fn explanation(self) -> &'static str {
                match self { $(Code::$name => $text,)* }
            }

            /// Looks a code up by its text (case-insensitive).
            pub fn parse(text: &str) -> Option<Code> {
                let upper = text.trim().to_ascii_uppercase();
                Code::ALL.iter().copied().find(|c| c.as_str() == upper)
            }
        }
    };
}

codes! {
    E0100 => "syntax error",
        "The text is not a valid .spread program: the parser expected something else at the marked place.\n\
         Every statement starts with a keyword (use, const, variant, data, fn, extern, flow, encoder,\n\
         plate, latent, param, let, observe, factor). Example of a correct latent:\n\n    latent scale ~ LogNormal(0.0, 1.0)\n";
    E0101 => "source is not UTF-8",
        "Model files must be UTF-8 text. The marked byte is not valid UTF-8; re-save the file as UTF-8\n\
         (most editors do so by default) or remove the stray byte.\n";
    E0102 => "nesting too deep",
        "Parentheses, brackets and braces may nest at most 64 levels. Deeper nesting is almost surely\n\
         generated text gone wrong; split the expression with `let`.\n";
    E0103 => "name too long",
        "Names (of latents, constants, plates, ...) may have at most 128 characters.\n";
    E0104 => "expression too long",
        "One expression may have at most 1000 binary operators and nest at most 100 operations deep.\n\
         Split it with `let`, or use a reduction\n\
         such as `sum(x over plate)` instead of writing the sum out.\n";
    E0105 => "number out of range",
        "An integer literal does not fit in 64 bits, or a real literal is not finite. Write reals with a\n\
         decimal point (1.0e30) and keep integers below 9223372036854775807.\n";
    E0106 => "source too large",
        "A model file may be at most 4 MiB. Data belong in data files read by `data` bindings, not in\n\
         the model text.\n";
    E0107 => "empty file",
        "The file holds no declarations or statements (only whitespace and comments). A warning: an\n\
         empty model has nothing to fit.\n";
    E0201 => "unknown name",
        "A name is used that is not declared: not a const, variant, data binding, latent, param, let,\n\
         function, plate, or imported item. Check the spelling, or import it:\n\n    use physics.{structure_factor}\n";
    E0202 => "duplicate name",
        "Two declarations share one name. All names of a model live in one namespace, across plates\n\
         (like Pyro's sample sites), because the inference reports results by name.\n";
    E0203 => "unknown module",
        "`use M.{...}` names a module that is neither in the standard library (stdlib/*.spread, built into\n\
         spreadc) nor a file M.spread in the model's folder or a folder given with --path.\n";
    E0204 => "module import cycle",
        "Modules import each other in a circle. Move the shared items into a third module that both use.\n";
    E0205 => "item not in module",
        "`use M.{x}` asks for an item that module M does not declare. The note lists what M offers.\n";
    E0206 => "unused import",
        "An imported item is never used. Remove it from the `use` list (warning only).\n";
    E0207 => "module declares model statements",
        "An imported module may declare only fn, extern fn, const, variant, flow and encoder items; data,\n\
         plate, latent, param, let and observe belong to the model file that is run.\n";
    E0208 => "function used before its declaration",
        "A function may call only functions declared above it (or imported). This rules out recursion,\n\
         which a static model graph cannot express.\n";
    E0209 => "unknown field",
        "A data record has no field of this name. Each data source has a fixed schema (see the README,\n\
         section 'Data sources'); the note lists the fields of this record.\n";
    E0301 => "type mismatch",
        "An operator or statement got a value of the wrong kind, e.g. arithmetic on a bool, or a\n\
         comparison of complex numbers. Reals, ints and complex numbers mix (int -> real -> complex).\n";
    E0302 => "shapes do not broadcast",
        "Two tensors are combined whose shapes do not broadcast. Shapes are aligned from the right; each\n\
         pair of sizes must be equal or one of them 1. `real[3]` and `real[100, 3]` broadcast;\n\
         `real[3]` and `real[4]` do not.\n";
    E0303 => "wrong number of arguments",
        "A function, physics operator or distribution is called with too many or too few arguments.\n";
    E0304 => "unknown distribution",
        "A `~` names a distribution spread does not know. The note lists the known ones.\n";
    E0305 => "argument of the wrong type",
        "An argument does not match the declared parameter type of the function or distribution.\n";
    E0306 => "too many indices",
        "A value is indexed with more indices than it has dimensions. `x[i]` picks along the first\n\
         axis, `x[i, j]` along the first two; a scalar cannot be indexed.\n";
    E0307 => "index is not an int",
        "Indices must be ints: int literals, int consts, or int data such as a table column\n\
         declared `group: int`. Reals are never rounded silently.\n";
    E0308 => "condition is not a bool",
        "The condition after `if` must be a bool known before fitting (from consts and variants).\n";
    E0309 => "not a collection",
        "`plate p in X` needs X to be a collection of records from a data source (e.g. shots.images,\n\
         image.shoeboxes, table.rows).\n";
    E0310 => "bad match on a variant",
        "`match v { ... }` must name a variant and cover each of its choices once (or end with `_ =>`).\n";
    E0311 => "function body has the wrong type",
        "The body of a function does not have the declared return type (base or shape). Ints pass\n\
         as reals and reals as complex, but not the other way round.\n";
    E0312 => "size not known before fitting",
        "Shapes of latents and params, sizes of plates and subsample sizes must be known before fitting:\n\
         an int literal, a const, or a size of the data (e.g. xtal.sites(\"FE\"), shots.n_channels).\n";
    E0313 => "unknown type",
        "A type annotation names an unknown type. Types: real, int, complex, bool, str, choice, and the\n\
         data records crystal, shots, image, shoebox, table, row; shapes go in brackets: real[3, n].\n";
    E0314 => "discrete latent",
        "Latents are fitted by reparameterized variational inference and need a continuous\n\
         distribution (Normal, LogNormal, Gamma, Beta, Dirichlet, ...). Poisson and Bernoulli may only be\n\
         observed.\n";
    E0401 => "value used outside its plate",
        "A value declared inside a plate has one copy per plate element; using it outside that plate\n\
         needs an explicit reduction, e.g. `sum(x over domain)`, `mean(x over image)` or\n\
         `stack(x over domain)` (which gives a tensor with one row per element).\n";
    E0402 => "observe in the wrong plate",
        "An observe must sit in exactly the plates of its data: observing image-level data inside the\n\
         shoebox plate would count it once per shoebox.\n";
    E0403 => "bad plate reduction",
        "`sum(x over p)` needs p to be a plate, and x to vary over p.\n";
    E0404 => "nested plate repeats a plate",
        "A plate may not be nested inside another plate with the same name or over the same collection.\n";
    E0405 => "observed value is not data",
        "`observe X ~ ...` needs X to be data (from a data binding), not something that depends on\n\
         latents or params.\n";
    E0406 => "bad plate size",
        "A sized plate `plate p[n]` needs n to be a positive int known before fitting; a subsample size\n\
         must be a positive int.\n";
    E0407 => "bad factor",
        "`factor X` adds X, summed over its elements, to the model's log density (a restraint or a\n\
         penalty, e.g. `factor smoothness(fdp, 0.1)`). X must be real (not complex, bool or str) and\n\
         vary over every plate the factor sits in: a factor of a global value inside a plate would be\n\
         added once per element. A factor that depends on no latent or param adds a constant and is\n\
         flagged with a warning.\n";
    E0408 => "bad record set",
        "`[f(s) for s in COLLECTION]` evaluates f at every record of a collection (e.g. the shoeboxes\n\
         of an image) and stacks the values, one row per record. COLLECTION must be a collection of\n\
         records (shots.images, image.shoeboxes); f(s) must be numeric data (no latents) of the same\n\
         size for every record, e.g. `log1p(sum(s.pixels))` rather than `s.pixels`. The number of\n\
         rows differs from record to record, so a set is an encoder input only: an image-level\n\
         encoder (`encoder NAME { embed = [..] }`) pools it permutation-invariantly (deep sets).\n";
    E0501 => "unknown data source",
        "A data binding names an unknown source. Sources: pdb(\"file.pdb\"), dials(\"*.expt\", \"*.refl\"),\n\
         table(\"file.csv\", column: type, ...).\n";
    E0502 => "bad data source arguments",
        "A data source got the wrong arguments; the note gives the expected form.\n";
    E0601 => "unknown setting",
        "`--set name=value` names no const or variant of the model.\n";
    E0602 => "bad setting value",
        "`--set name=value` gives a value of the wrong type for a const, or a choice a variant does not\n\
         have.\n";
    E0603 => "bad flow or encoder setting",
        "Flows accept: kind (affine_coupling | planar | spline | gain), layers, bins (spline bins, a\n\
         positive int; a run needs 2 to 64), hidden, activation, readout (a non-negative real,\n\
         counts) and given_expected (a bool). Encoders accept: hidden, activation. layers is a\n\
         positive int, hidden a list of positive ints, activation one of relu | tanh | sigmoid |\n\
         softplus.\n";
    E0604 => "bad guide",
        "A guide is `guide mean_field`, `guide map`, `guide partial_centring` (a Normal latent only),\n\
         `guide low_rank(RANK)` (a constant int from 1 to the latent's element count), `guide\n\
         full_rank`, or `guide ENCODER(inputs...)` naming an encoder declaration; encoder inputs\n\
         must be data.\n";
    E0605 => "bad correction flow",
        "`corrected by F(context..., setting = value...) penalty W` needs F to be a flow declaration,\n\
         W a non-negative real known before fitting, and every unnamed input (the conditioner's\n\
         context) real data known before fitting.\n";
    E0606 => "not a constant",
        "A const must be computable before fitting: literals, other consts and arithmetic on them.\n";
}
