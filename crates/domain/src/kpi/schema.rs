//! The OpenAPI schema of [`Totals`]: one property per KPI of the catalogue.

use std::borrow::Cow;

use utoipa::openapi::{
    KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type, schema::SchemaType,
};

use super::{Kpi, Totals};

impl utoipa::PartialSchema for Totals {
    /// One property per KPI of the catalogue.
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new().description(Some(
            "Totals; money in integer micros; ratios absent when their denominator is zero.",
        ));
        for kpi in Kpi::all() {
            let def = kpi.def();
            let (kind, format) = if def.formula.is_integer() {
                (Type::Integer, KnownFormat::Int64)
            } else {
                (Type::Number, KnownFormat::Double)
            };
            let kind = if def.formula.is_optional() {
                SchemaType::from_iter([kind, Type::Null])
            } else {
                SchemaType::new(kind)
            };
            object = object.property(
                def.field,
                ObjectBuilder::new()
                    .schema_type(kind)
                    .format(Some(SchemaFormat::KnownFormat(format))),
            );
            if !def.formula.is_optional() {
                object = object.required(def.field);
            }
        }
        RefOr::T(Schema::Object(object.build()))
    }
}

impl utoipa::ToSchema for Totals {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("KpiTotals")
    }
}
