package org.opensky.lakehouse.json;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DoubleType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * A Kafka record's JSON bytes parsed into the record's fields, for the records that need nothing
 * but the plain JSON our producers write: one flat object of known keys, each once, strings
 * without escapes, numbers of the field's own kind. For anything else it returns null, and the
 * caller parses the record with Spark's {@code from_json} (lakehouse.transforms.silver): a record
 * this parser accepts gets the same values {@code from_json} gives it, and every other record is
 * parsed by {@code from_json} itself.
 *
 * <p>{@code from_json} reads each record through a new character reader and Jackson's general
 * parser, with a converter per value (about two thirds of silver's parse and validate); this
 * reads the bytes once. The fields and their types are the row type the caller gives (the record
 * contract, lakehouse.records.RECORD_TYPES: string, long, int, double, boolean, array&lt;int&gt;),
 * whose last field is from_json's corrupt-record column, always null here.
 */
public final class RecordParser implements UDF1<byte[], Row> {
    private static final long serialVersionUID = 1L;

    static final int STRING = 0, LONG = 1, INT = 2, DOUBLE = 3, BOOLEAN = 4, INT_ARRAY = 5;

    private final byte[][] names;
    private final int[] kinds;

    /** The parser of the record fields {@code fields} (string, long, int, double, boolean, array&lt;int&gt;). */
    public RecordParser(StructField[] fields) {
        if (fields.length > 63) {
            throw new IllegalArgumentException("at most 63 fields");
        }
        this.names = new byte[fields.length][];
        this.kinds = new int[fields.length];
        for (int i = 0; i < fields.length; i++) {
            this.names[i] = fields[i].name().getBytes(StandardCharsets.UTF_8);
            this.kinds[i] = kind(fields[i].dataType());
        }
    }

    /**
     * The parser as a UDF of {@code value} (binary) returning a row of {@code rowTypeJson}: the
     * record's fields, then the corrupt-record column. Made here, where Java picks
     * {@code functions.udf(UDF1, DataType)}: from Python, Py4J may pick the untyped
     * {@code udf(Object, DataType)}, which Spark refuses.
     */
    public static UserDefinedFunction udf(String rowTypeJson) {
        StructType row = (StructType) DataType.fromJson(rowTypeJson);
        StructField[] fields = row.fields();
        return functions.udf(new RecordParser(Arrays.copyOf(fields, fields.length - 1)), row).withName("plain_record");
    }

    private static int kind(DataType type) {
        if (type instanceof StringType) {
            return STRING;
        }
        if (type instanceof LongType) {
            return LONG;
        }
        if (type instanceof IntegerType) {
            return INT;
        }
        if (type instanceof DoubleType) {
            return DOUBLE;
        }
        if (type instanceof BooleanType) {
            return BOOLEAN;
        }
        if (type instanceof ArrayType && ((ArrayType) type).elementType() instanceof IntegerType) {
            return INT_ARRAY;
        }
        throw new IllegalArgumentException("unsupported type " + type.simpleString());
    }

    /** Thrown where the record is not plain: {@code from_json} decides. Carries no stack trace. */
    private static final class NotPlain extends Exception {
        private static final long serialVersionUID = 1L;
        static final NotPlain INSTANCE = new NotPlain();

        private NotPlain() {
            super(null, null, false, false);
        }
    }

    @Override
    public Row call(byte[] value) {
        if (value == null) {
            return null;
        }
        try {
            return RowFactory.create(parse(value));
        } catch (NotPlain e) {
            return null;
        }
    }

    /** The field values (and a null corrupt-record column), or NotPlain. */
    Object[] parse(byte[] b) throws NotPlain {
        Object[] out = new Object[names.length + 1];
        long seen = 0;
        int previous = -1;
        int i = skip(b, 0);
        if (i >= b.length || b[i] != '{') {
            throw NotPlain.INSTANCE;
        }
        i = skip(b, i + 1);
        if (i < b.length && b[i] == '}') {
            return end(b, i + 1, out);
        }
        while (true) {
            if (i >= b.length || b[i] != '"') {
                throw NotPlain.INSTANCE;
            }
            int keyStart = i + 1;
            int keyEnd = stringEnd(b, keyStart);
            int field = field(b, keyStart, keyEnd, previous + 1);
            if (field < 0 || (seen & (1L << field)) != 0) {
                throw NotPlain.INSTANCE;  // a key not in the record, or twice
            }
            seen |= 1L << field;
            previous = field;
            i = skip(b, keyEnd + 1);
            if (i >= b.length || b[i] != ':') {
                throw NotPlain.INSTANCE;
            }
            i = skip(b, i + 1);
            i = value(b, i, field, out);
            i = skip(b, i);
            if (i >= b.length) {
                throw NotPlain.INSTANCE;
            }
            if (b[i] == '}') {
                return end(b, i + 1, out);
            }
            if (b[i] != ',') {
                throw NotPlain.INSTANCE;
            }
            i = skip(b, i + 1);
        }
    }

    private static Object[] end(byte[] b, int i, Object[] out) throws NotPlain {
        if (skip(b, i) != b.length) {
            throw NotPlain.INSTANCE;  // anything after the object
        }
        return out;
    }

    private static int skip(byte[] b, int i) {
        while (i < b.length && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) {
            i++;
        }
        return i;
    }

    /** The index of the closing quote of a string starting at {@code i}: no escapes, no control characters. */
    private static int stringEnd(byte[] b, int i) throws NotPlain {
        while (i < b.length) {
            byte c = b[i];
            if (c == '"') {
                return i;
            }
            if (c == '\\' || (c >= 0 && c < 0x20)) {
                throw NotPlain.INSTANCE;
            }
            i++;
        }
        throw NotPlain.INSTANCE;
    }

    /** The field named by the key {@code b[start:end]}, -1 for none; {@code expected} (the field
     * after the previous key: records list their fields in order) is compared first. */
    private int field(byte[] b, int start, int end, int expected) {
        if (expected < names.length && is(names[expected], b, start, end)) {
            return expected;
        }
        for (int f = 0; f < names.length; f++) {
            if (is(names[f], b, start, end)) {
                return f;
            }
        }
        return -1;
    }

    private static boolean is(byte[] name, byte[] b, int start, int end) {
        return name.length == end - start && Arrays.equals(name, 0, name.length, b, start, end);
    }

    private static boolean at(byte[] b, int i, String word) {
        if (i + word.length() > b.length) {
            return false;
        }
        for (int k = 0; k < word.length(); k++) {
            if (b[i + k] != word.charAt(k)) {
                return false;
            }
        }
        return true;
    }

    /** Parses the value of {@code field} at {@code i} into {@code out}; returns the index after it. */
    private int value(byte[] b, int i, int field, Object[] out) throws NotPlain {
        if (i >= b.length) {
            throw NotPlain.INSTANCE;
        }
        if (at(b, i, "null")) {
            return i + 4;  // out[field] stays null
        }
        switch (kinds[field]) {
            case STRING: {
                if (b[i] != '"') {
                    throw NotPlain.INSTANCE;
                }
                int end = stringEnd(b, i + 1);
                out[field] = new String(b, i + 1, end - i - 1, StandardCharsets.UTF_8);
                return end + 1;
            }
            case BOOLEAN:
                if (at(b, i, "true")) {
                    out[field] = Boolean.TRUE;
                    return i + 4;
                }
                if (at(b, i, "false")) {
                    out[field] = Boolean.FALSE;
                    return i + 5;
                }
                throw NotPlain.INSTANCE;
            case LONG: {
                int end = integerEnd(b, i);
                out[field] = integer(b, i, end);
                return end;
            }
            case INT: {
                int end = integerEnd(b, i);
                out[field] = intValue(integer(b, i, end));
                return end;
            }
            case DOUBLE:
                return number(b, i, field, out);
            case INT_ARRAY:
                return intArray(b, i, field, out);
            default:
                throw NotPlain.INSTANCE;
        }
    }

    private static Integer intValue(long v) throws NotPlain {
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
            throw NotPlain.INSTANCE;
        }
        return (int) v;
    }

    /** The end of an integer token at {@code i} (JSON's grammar: no leading zeros, no plus sign),
     * followed by no fraction or exponent; at most 18 digits. */
    private static int integerEnd(byte[] b, int i) throws NotPlain {
        int end = integerPart(b, i);
        if (end - i - (b[i] == '-' ? 1 : 0) > 18) {
            throw NotPlain.INSTANCE;
        }
        if (end < b.length && (b[end] == '.' || b[end] == 'e' || b[end] == 'E')) {
            throw NotPlain.INSTANCE;  // a fraction or exponent: not this field's kind
        }
        return end;
    }

    /** The end of a number's integer part at {@code i}: an optional minus sign, then at least one
     * digit, no leading zero. */
    private static int integerPart(byte[] b, int i) throws NotPlain {
        int first = i < b.length && b[i] == '-' ? i + 1 : i;
        int end = digitsEnd(b, first);
        if (end == first || (end - first > 1 && b[first] == '0')) {
            throw NotPlain.INSTANCE;
        }
        return end;
    }

    private static int digitsEnd(byte[] b, int i) {
        while (i < b.length && b[i] >= '0' && b[i] <= '9') {
            i++;
        }
        return i;
    }

    private static long integer(byte[] b, int start, int end) {
        boolean negative = b[start] == '-';
        long v = 0;
        for (int k = negative ? start + 1 : start; k < end; k++) {
            v = v * 10 + (b[k] - '0');
        }
        return negative ? -v : v;
    }

    /** A number for a double field: an integer token as Jackson converts it (its long value), any
     * other by {@link Double#parseDouble} (correctly rounded, as Jackson's). */
    private static int number(byte[] b, int i, int field, Object[] out) throws NotPlain {
        int start = i;
        i = integerPart(b, i);
        int n = i - start - (b[start] == '-' ? 1 : 0);
        boolean integral = true;
        if (i < b.length && b[i] == '.') {
            integral = false;
            int fraction = i + 1;
            i = digitsEnd(b, fraction);
            if (i == fraction) {
                throw NotPlain.INSTANCE;
            }
        }
        if (i < b.length && (b[i] == 'e' || b[i] == 'E')) {
            integral = false;
            int exponent = i + 1 < b.length && (b[i + 1] == '+' || b[i + 1] == '-') ? i + 2 : i + 1;
            i = digitsEnd(b, exponent);
            if (i == exponent) {
                throw NotPlain.INSTANCE;
            }
        }
        double v;
        if (integral) {
            if (n > 18) {
                throw NotPlain.INSTANCE;
            }
            v = (double) integer(b, start, i);
        } else {
            v = Double.parseDouble(new String(b, start, i - start, StandardCharsets.ISO_8859_1));
            if (Double.isInfinite(v)) {
                throw NotPlain.INSTANCE;
            }
        }
        out[field] = v;
        return i;
    }

    private static int intArray(byte[] b, int i, int field, Object[] out) throws NotPlain {
        if (b[i] != '[') {
            throw NotPlain.INSTANCE;
        }
        i = skip(b, i + 1);
        Integer[] values = new Integer[4];
        int n = 0;
        if (i < b.length && b[i] == ']') {
            out[field] = new Integer[0];
            return i + 1;
        }
        while (true) {
            Integer element;
            if (at(b, i, "null")) {
                element = null;
                i += 4;
            } else {
                int end = integerEnd(b, i);
                element = intValue(integer(b, i, end));
                i = end;
            }
            if (n == values.length) {
                values = Arrays.copyOf(values, n * 2);
            }
            values[n++] = element;
            i = skip(b, i);
            if (i >= b.length) {
                throw NotPlain.INSTANCE;
            }
            if (b[i] == ']') {
                out[field] = Arrays.copyOf(values, n);
                return i + 1;
            }
            if (b[i] != ',') {
                throw NotPlain.INSTANCE;
            }
            i = skip(b, i + 1);
        }
    }
}
