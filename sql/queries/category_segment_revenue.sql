-- Revenue by top-level category and customer segment as it was when each
-- order was placed (not the segment the customer has now), over the last
-- three months with sales, with each segment's share of the category.
WITH last AS (SELECT max(month) AS m FROM storefront_dw.monthly_segment_revenue),
r AS (
    SELECT top_category, segment, sum(revenue_cents) AS cents
    FROM storefront_dw.monthly_segment_revenue
    WHERE month > (SELECT m FROM last) - interval '3 months'
    GROUP BY top_category, segment
)
SELECT top_category, segment, round(cents / 100.0, 2) AS revenue,
       round(100.0 * cents / sum(cents) OVER (PARTITION BY top_category), 1) AS "share %"
FROM r
ORDER BY top_category, array_position(ARRAY['new', 'one-time', 'repeat', 'loyal'], segment);
